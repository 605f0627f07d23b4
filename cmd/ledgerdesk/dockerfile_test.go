package main

import (
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// instruction is one Dockerfile instruction, continuation lines joined.
type instruction struct {
	cmd, args string
}

// parseDockerfile returns the instructions of each build stage in order.
func parseDockerfile(tb testing.TB, path string) [][]instruction {
	tb.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		tb.Fatal(err)
	}
	var stages [][]instruction
	var cur strings.Builder
	flush := func() {
		line := strings.TrimSpace(cur.String())
		cur.Reset()
		if line == "" {
			return
		}
		cmd, args, _ := strings.Cut(line, " ")
		in := instruction{cmd: strings.ToUpper(cmd), args: strings.TrimSpace(args)}
		if in.cmd == "FROM" {
			stages = append(stages, nil)
		}
		if len(stages) == 0 {
			tb.Fatalf("%s: %s before the first FROM", path, in.cmd)
		}
		stages[len(stages)-1] = append(stages[len(stages)-1], in)
	}
	for line := range strings.SplitSeq(string(raw), "\n") {
		trimmed := strings.TrimSpace(line)
		if strings.HasPrefix(trimmed, "#") {
			continue
		}
		if s, ok := strings.CutSuffix(trimmed, `\`); ok {
			cur.WriteString(s + " ")
			continue
		}
		cur.WriteString(trimmed)
		flush()
	}
	flush()
	return stages
}

// The shipped image must verify TLS (IMAP, POP3, SMTP, OAuth token
// endpoints), run without root and keep its data where it may write.
func TestDockerfile_RuntimeImageCanVerifyTLS(t *testing.T) {
	t.Parallel()
	root := filepath.Join("..", "..")
	stages := parseDockerfile(t, filepath.Join(root, "Dockerfile"))
	if len(stages) < 2 {
		t.Fatalf("Dockerfile has %d stage(s), want a build stage and a runtime stage", len(stages))
	}
	final := stages[len(stages)-1]
	var runs, envs []string
	user := ""
	for _, in := range final {
		switch in.cmd {
		case "RUN":
			runs = append(runs, in.args)
		case "ENV":
			envs = append(envs, in.args)
		case "USER":
			user = in.args
		}
	}
	install := regexp.MustCompile(`apt-get install\b[^;&|]*\bca-certificates\b`)
	if !slices.ContainsFunc(runs, install.MatchString) {
		t.Errorf("the runtime stage installs no ca-certificates (RUN %q): TLS to mail servers and OAuth providers cannot be verified", runs)
	}
	for _, r := range runs {
		if strings.Contains(r, "apt-get install") && (!strings.Contains(r, "--no-install-recommends") || !strings.Contains(r, "rm -rf /var/lib/apt/lists")) {
			t.Errorf("RUN %q: want --no-install-recommends and the apt lists removed in the same layer", r)
		}
	}
	if user == "" || user == "root" || strings.HasPrefix(user, "0") {
		t.Errorf("USER = %q, want a non-root user", user)
	} else if !regexp.MustCompile(`^[1-9][0-9]*(:[1-9][0-9]*)?$`).MatchString(user) {
		t.Errorf("USER = %q, want a numeric uid (Kubernetes' runAsNonRoot can only check a number)", user)
	}
	for _, want := range []string{envDataDir + "=/var/lib/ledgerdesk", envHTTPAddr + "=0.0.0.0:8080"} {
		if !slices.ContainsFunc(envs, func(e string) bool { return strings.Contains(e, want) }) {
			t.Errorf("the runtime stage does not set %s (ENV %q)", want, envs)
		}
	}

	// the build context leaves out the local data directory (its key and
	// mail) and the repository
	ignore, err := os.ReadFile(filepath.Join(root, ".dockerignore"))
	if err != nil {
		t.Fatalf(".dockerignore: %v", err)
	}
	lines := strings.Fields(string(ignore))
	for _, want := range []string{"data", ".git"} {
		if !slices.Contains(lines, want) && !slices.Contains(lines, "/"+want) {
			t.Errorf(".dockerignore does not leave out %s: %q", want, lines)
		}
	}
}
