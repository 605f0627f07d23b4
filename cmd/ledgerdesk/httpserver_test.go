package main

import (
	"go/ast"
	"go/parser"
	"go/token"
	"strconv"
	"testing"
	"time"
)

// The API server must bound how long a client may take to send a request
// and to read an answer, and how long an idle connection stays open, or
// slow clients hold connections and goroutines for ever. Downloads extend
// their own write deadline (api/bodies.go); a connection check runs up to
// a minute before it answers. The literal is read from serve.go: starting
// serve and waiting out the timeouts would take minutes.
func TestServe_HTTPServerHasTimeouts(t *testing.T) {
	t.Parallel()
	f, err := parser.ParseFile(token.NewFileSet(), "serve.go", nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	var fields map[string]ast.Expr
	ast.Inspect(f, func(n ast.Node) bool {
		lit, ok := n.(*ast.CompositeLit)
		if !ok {
			return true
		}
		if sel, ok := lit.Type.(*ast.SelectorExpr); ok && sel.Sel.Name == "Server" {
			if pkg, ok := sel.X.(*ast.Ident); ok && pkg.Name == "http" {
				fields = map[string]ast.Expr{}
				for _, el := range lit.Elts {
					if kv, ok := el.(*ast.KeyValueExpr); ok {
						fields[kv.Key.(*ast.Ident).Name] = kv.Value
					}
				}
			}
		}
		return true
	})
	if fields == nil {
		t.Fatal("serve.go has no http.Server literal")
	}
	got := map[string]time.Duration{}
	for _, name := range []string{"ReadHeaderTimeout", "ReadTimeout", "WriteTimeout", "IdleTimeout"} {
		expr, ok := fields[name]
		if !ok {
			t.Errorf("http.Server sets no %s", name)
			continue
		}
		d, ok := duration(expr)
		if !ok {
			t.Errorf("%s: cannot read the duration (write it as N * time.Second or time.Minute)", name)
			continue
		}
		got[name] = d
	}
	if got["ReadTimeout"] < got["ReadHeaderTimeout"] {
		t.Errorf("ReadTimeout %v is shorter than ReadHeaderTimeout %v", got["ReadTimeout"], got["ReadHeaderTimeout"])
	}
	if w := got["WriteTimeout"]; w <= time.Minute {
		t.Errorf("WriteTimeout %v does not outlast a connection check (1 min) and its answer", w)
	}
	for name, d := range got {
		if d <= 0 || d > 10*time.Minute {
			t.Errorf("%s = %v, want a bound from 1 s to 10 min", name, d)
		}
	}
}

// duration evaluates N * time.Unit, time.Unit * N and time.Unit.
func duration(e ast.Expr) (time.Duration, bool) {
	switch e := e.(type) {
	case *ast.SelectorExpr:
		if pkg, ok := e.X.(*ast.Ident); ok && pkg.Name == "time" {
			switch e.Sel.Name {
			case "Second":
				return time.Second, true
			case "Minute":
				return time.Minute, true
			}
		}
	case *ast.BasicLit:
		if n, err := strconv.Atoi(e.Value); err == nil {
			return time.Duration(n), true
		}
	case *ast.BinaryExpr:
		x, ok1 := duration(e.X)
		y, ok2 := duration(e.Y)
		if e.Op == token.MUL && ok1 && ok2 {
			return x * y, true
		}
	case *ast.ParenExpr:
		return duration(e.X)
	}
	return 0, false
}
