package domain_test

import (
	"bufio"
	"bytes"
	"go/ast"
	"go/parser"
	"go/token"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// Rule 1 of STYLE.md: the domain imports only pure standard-library
// packages, so replaying history gives the same answer forever. Checked the
// way Tailscale's deptest does: `go list -deps` for the whole import graph,
// plus go/parser for the package's own imports and calls.

// forbiddenDeps may not appear anywhere in the domain's import graph.
var forbiddenDeps = []string{
	"net", "net/http", "net/mail", "net/smtp", "net/textproto", "database/sql", "log", "log/slog",
	"math/rand", "math/rand/v2", "crypto/rand", "os/exec", "plugin",
}

// forbiddenDirect may not be imported by the domain's own files, though the
// standard library uses some of them underneath (fmt uses os).
var forbiddenDirect = append([]string{"os", "os/signal", "syscall", "io/fs", "path/filepath", "runtime", "unsafe", "context", "sync"}, forbiddenDeps...)

// forbiddenCalls read the wall clock or sleep; time arrives as input.
var forbiddenCalls = map[string][]string{"time": {"Now", "Since", "Until", "Sleep", "After", "Tick", "NewTimer", "NewTicker", "AfterFunc"}}

type listedPkg struct {
	path     string
	standard bool
}

// depProblems returns what is wrong with a dependency list.
func depProblems(deps []listedPkg) []string {
	var out []string
	for _, d := range deps {
		switch {
		case strings.HasPrefix(d.path, "github.com/ledgerdesk/ledgerdesk/domain"):
		case !d.standard:
			out = append(out, "non-standard dependency "+d.path)
		case slices.Contains(forbiddenDeps, d.path):
			out = append(out, "forbidden dependency "+d.path)
		}
	}
	return out
}

// fileProblems returns forbidden imports and clock calls in one file.
func fileProblems(fset *token.FileSet, f *ast.File) []string {
	var out []string
	local := map[string]string{} // local name -> import path
	for _, imp := range f.Imports {
		p, err := strconv.Unquote(imp.Path.Value)
		if err != nil {
			continue
		}
		if slices.Contains(forbiddenDirect, p) || strings.Contains(p, ".") {
			out = append(out, fset.Position(imp.Pos()).String()+": imports "+p)
		}
		name := p[strings.LastIndex(p, "/")+1:]
		if imp.Name != nil {
			name = imp.Name.Name
		}
		local[name] = p
	}
	ast.Inspect(f, func(n ast.Node) bool {
		sel, ok := n.(*ast.SelectorExpr)
		if !ok {
			return true
		}
		id, ok := sel.X.(*ast.Ident)
		if !ok {
			return true
		}
		if slices.Contains(forbiddenCalls[local[id.Name]], sel.Sel.Name) {
			out = append(out, fset.Position(sel.Pos()).String()+": uses "+local[id.Name]+"."+sel.Sel.Name)
		}
		return true
	})
	return out
}

func TestPurity_dependencies(t *testing.T) {
	t.Parallel()
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("go command not found: %v", err)
	}
	out, err := exec.Command(goBin, "list", "-deps", "-f", "{{.ImportPath}} {{.Standard}}", ".").Output()
	if err != nil {
		t.Fatalf("go list -deps: %v", err)
	}
	var deps []listedPkg
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		path, std, _ := strings.Cut(sc.Text(), " ")
		deps = append(deps, listedPkg{path: path, standard: std == "true"})
	}
	if len(deps) < 10 {
		t.Fatalf("go list -deps listed %d packages, want the whole graph", len(deps))
	}
	for _, p := range depProblems(deps) {
		t.Error(p)
	}
}

func TestPurity_sourceFiles(t *testing.T) {
	t.Parallel()
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	fset := token.NewFileSet()
	checked := 0
	for _, name := range files {
		if strings.HasSuffix(name, "_test.go") {
			continue
		}
		full, err := parser.ParseFile(fset, name, nil, parser.SkipObjectResolution)
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range fileProblems(fset, full) {
			t.Error(p)
		}
		checked++
	}
	if checked < 5 {
		t.Fatalf("checked %d files, want all of the package", checked)
	}
}

// TestPurity_checkerCatches proves the checks can fail.
func TestPurity_checkerCatches(t *testing.T) {
	t.Parallel()
	deps := []listedPkg{{"fmt", true}, {"net", true}, {"github.com/jackc/pgx/v5", false}, {"github.com/ledgerdesk/ledgerdesk/domain", false}}
	if got := depProblems(deps); len(got) != 2 {
		t.Errorf("depProblems() = %q, want the net and pgx problems", got)
	}
	src := `package domain
import (
	"os"
	tm "time"
	"github.com/labstack/echo/v4"
)
func f() { _ = tm.Now(); _ = os.Getenv("X"); _ = echo.New }
`
	fset := token.NewFileSet()
	f, err := parser.ParseFile(fset, "bad.go", src, 0)
	if err != nil {
		t.Fatal(err)
	}
	if got := fileProblems(fset, f); len(got) != 3 {
		t.Errorf("fileProblems() = %q, want os, echo and time.Now", got)
	}
}
