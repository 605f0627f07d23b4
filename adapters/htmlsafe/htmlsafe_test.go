package htmlsafe_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/ledgerdesk/ledgerdesk/adapters/htmlsafe"
)

const base = "/api/v1/tickets/T/articles/2/inline/"

func TestSanitize(t *testing.T) {
	t.Parallel()
	s := htmlsafe.New(htmlsafe.Options{})
	tests := []struct {
		name  string
		given string
		want  string
	}{
		{name: "scripts and their text are dropped",
			given: `<p>hi</p><script>alert(1)</script><script src="http://x/a.js"></script>`,
			want:  `<p>hi</p>`},
		{name: "event handlers are dropped, the element stays",
			given: `<p onclick="steal()" onmouseover="x()">hi</p>`,
			want:  `<p>hi</p>`},
		{name: "a remote image loses its source; protocol-relative and relative ones go entirely",
			given: `<img src="http://tracker.example/p.gif"><img src="//evil.example/x.png"><img src="/local.png">`,
			want:  `<img>`},
		{name: "a remote image keeps its harmless attributes but not its source",
			given: `<img src="https://tracker.example/p.gif" alt="pixel" width="1">`,
			want:  `<img alt="pixel" width="1">`},
		{name: "a cid image points at the API's inline URL, %-decoded and re-encoded",
			given: `<img src="cid:logo%40x" alt="logo"><img src="CID:part1.06%2009@mail">`,
			want:  `<img src="` + base + `logo@x" alt="logo"><img src="` + base + `part1.06%2009@mail">`},
		{name: "a data image stays",
			given: `<img src="data:image/png;base64,iVBORw0KGgo=">`,
			want:  `<img src="data:image/png;base64,iVBORw0KGgo=">`},
		{name: "a data URI of another type is dropped",
			given: `<img src="data:text/html;base64,PHNjcmlwdD4=" alt="x">`,
			want:  `<img alt="x">`},
		{name: "links stay, marked nofollow noreferrer noopener and opened in a new tab",
			given: `<a href="https://example.org/x">x</a>`,
			want:  `<a href="https://example.org/x" rel="nofollow noreferrer noopener" target="_blank">x</a>`},
		{name: "javascript and relative links lose the link, keep the text",
			given: `<a href="javascript:alert(1)">a</a> <a href="/api/v1/tokens">b</a>`,
			want:  `a b`},
		{name: "stylesheets, style elements and link elements are dropped",
			given: `<style>body{background:url(http://x/y)}</style><link rel="stylesheet" href="http://x/s.css"><p>t</p>`,
			want:  `<p>t</p>`},
		{name: "inline styles keep safe properties and lose url() and resource properties",
			given: `<td style="color:red;background:url(http://t/p.gif);background-image:url(x);width:10px;font-size:expression(alert(1))">c</td>`,
			want:  `<td style="color: red; width: 10px">c</td>`},
		{name: "frames, objects and forms are dropped",
			given: `<iframe src="http://x"></iframe><object data="http://x/o"></object><form action="http://x"><input name="a"></form>ok`,
			want:  `ok`},
		{name: "a table background attribute is dropped",
			given: `<table background="http://x/bg.png"><tr><td>c</td></tr></table>`,
			want:  `<table><tr><td>c</td></tr></table>`},
		{name: "text that looks like a cid source is escaped text, not rewritten",
			given: `<p> src="cid:x"</p>`,
			want:  `<p> src=&#34;cid:x&#34;</p>`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got, err := s.Sanitize(context.Background(), tc.given, base)
			if err != nil {
				t.Fatalf("Sanitize() error = %v", err)
			}
			if d := cmp.Diff(htmlsafe.Result{HTML: tc.want}, got); d != "" {
				t.Errorf("Sanitize(%q) (-want +got):\n%s", tc.given, d)
			}
		})
	}
}

func TestSanitize_NoInlineBaseDropsCidImages(t *testing.T) {
	t.Parallel()
	got, err := htmlsafe.New(htmlsafe.Options{}).Sanitize(context.Background(), `<img src="cid:a@b" alt="a">`, "")
	if err != nil || got.HTML != `<img alt="a">` {
		t.Errorf("Sanitize() = %q, %v, want the image without source", got.HTML, err)
	}
}

func TestSanitizeWithoutInlineImages_TakesCidImagesOutWhole(t *testing.T) {
	t.Parallel()
	given := `<p>Logo: <IMG alt="x>y" SRC="CID:logo@b" width="10"> and <img src="data:image/png;base64,AAAA" alt="kept"></p>` +
		`<p>cid:text stays <a href="cid:part@b">a link</a></p>`
	got, err := htmlsafe.New(htmlsafe.Options{}).SanitizeWithoutInlineImages(context.Background(), given)
	want := `<p>Logo:  and <img src="data:image/png;base64,AAAA" alt="kept"></p><p>cid:text stays <a href="cid:part@b" rel="nofollow noreferrer">a link</a></p>`
	if err != nil || got.HTML != want {
		t.Errorf("SanitizeWithoutInlineImages() = %q, %v\nwant %q", got.HTML, err, want)
	}
}

func TestSanitize_TruncatesWithANotice(t *testing.T) {
	t.Parallel()
	// given HTML longer than MaxBytes, cut inside a multi-byte character
	s := htmlsafe.New(htmlsafe.Options{MaxBytes: 10})
	got, err := s.Sanitize(context.Background(), "<p>äöüäöüäöü</p>", base)
	if err != nil {
		t.Fatalf("Sanitize() error = %v", err)
	}
	// then the result says so and ends with the notice, and no character is split
	want := `<p>äöü<p data-ledgerdesk-notice="truncated">[ledgerdesk: this HTML was cut off after 10 bytes; the complete mail is in its .eml download]</p>`
	if d := cmp.Diff(htmlsafe.Result{HTML: want, Truncated: true}, got); d != "" {
		t.Errorf("Sanitize() (-want +got):\n%s", d)
	}
}

func TestSanitize_TimeBudget(t *testing.T) {
	t.Parallel()
	// given a budget no real sanitising fits into
	s := htmlsafe.New(htmlsafe.Options{Timeout: time.Nanosecond, Workers: 1})
	big := strings.Repeat(`<div onclick="x()"><p>cell</p><img src="http://x/y.png"></div>`, 20000)
	if _, err := s.Sanitize(context.Background(), big, base); !errors.Is(err, htmlsafe.ErrTimeout) {
		t.Errorf("Sanitize() error = %v, want ErrTimeout", err)
	}
	// and a caller that gives up is told why
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := htmlsafe.New(htmlsafe.Options{}).Sanitize(ctx, big, base); !errors.Is(err, context.Canceled) {
		t.Errorf("Sanitize(cancelled) error = %v, want context.Canceled", err)
	}
}

func BenchmarkSanitize1MiB(b *testing.B) {
	s := htmlsafe.New(htmlsafe.Options{Timeout: time.Minute})
	unit := `<table><tr><td style="color:red" onclick="x()"><a href="https://example.org/a">link</a><img src="cid:a@b"><img src="http://t/p.gif"></td></tr></table>`
	src := strings.Repeat(unit, (1<<20)/len(unit))
	b.SetBytes(int64(len(src)))
	for b.Loop() {
		if _, err := s.Sanitize(context.Background(), src, base); err != nil {
			b.Fatal(err)
		}
	}
}
