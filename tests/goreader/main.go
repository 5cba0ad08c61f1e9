// goreader: how Go's net/http (dockerd's HTTP server) reads request targets and form bodies,
// for tests/test_target_differential.py. It reads one JSON object a line on stdin and writes
// one JSON object a line on stdout:
//
//	{"target": "/v1.41/x?a=1"}  ->  {"ok": true, "path": "<hex of r.URL.Path>", "clean": true,
//	                                  "form": [["a", ["1"]]], "form_error": false}
//	{"content_type": "..."}     ->  {"ok": true, "form_read": false, "media_type": "..."}
//
// "ok" is false when net/http refuses the request itself (it answers 400). "clean" says
// whether gorilla/mux routes the path as it is (its cleanPath leaves it alone) rather than
// answering 301. "form" is r.Form after r.ParseForm (names sorted, values in order).
// "form_read" says whether a POST body "zz=1" with that Content-Type becomes a parameter
// by r.FormValue, which dockerd's handlers call; "media_type" is mime.ParseMediaType's.
package main

import (
	"bufio"
	"encoding/hex"
	"encoding/json"
	"mime"
	"net/http"
	"os"
	"path"
	"sort"
	"strings"
)

type query struct {
	Target      *string `json:"target"`
	ContentType *string `json:"content_type"`
}

// cleanPath is gorilla/mux's: path.Clean, keeping a trailing slash.
func cleanPath(p string) string {
	if p == "" {
		return "/"
	}
	if p[0] != '/' {
		p = "/" + p
	}
	np := path.Clean(p)
	if p[len(p)-1] == '/' && np != "/" {
		np += "/"
	}
	return np
}

func readTarget(target string) map[string]any {
	raw := "GET " + target + " HTTP/1.1\r\nHost: docker\r\n\r\n"
	r, err := http.ReadRequest(bufio.NewReader(strings.NewReader(raw)))
	if err != nil {
		return map[string]any{"ok": false}
	}
	formErr := r.ParseForm() != nil
	names := make([]string, 0, len(r.Form))
	for k := range r.Form {
		names = append(names, k)
	}
	sort.Strings(names)
	form := make([][]any, 0, len(names))
	for _, k := range names {
		form = append(form, []any{hex.EncodeToString([]byte(k)), hexAll(r.Form[k])})
	}
	return map[string]any{
		"ok":         true,
		"path":       hex.EncodeToString([]byte(r.URL.Path)),
		"clean":      cleanPath(r.URL.Path) == r.URL.Path,
		"form":       form,
		"form_error": formErr,
	}
}

func hexAll(values []string) []string {
	out := make([]string, len(values))
	for i, v := range values {
		out[i] = hex.EncodeToString([]byte(v))
	}
	return out
}

func readForm(contentType string) map[string]any {
	body := "zz=1"
	raw := "POST /build HTTP/1.1\r\nHost: docker\r\nContent-Type: " + contentType +
		"\r\nContent-Length: 4\r\n\r\n" + body
	r, err := http.ReadRequest(bufio.NewReader(strings.NewReader(raw)))
	if err != nil {
		return map[string]any{"ok": false}
	}
	media, _, _ := mime.ParseMediaType(contentType)
	return map[string]any{"ok": true, "form_read": r.FormValue("zz") != "", "media_type": media}
}

func main() {
	in := bufio.NewScanner(os.Stdin)
	in.Buffer(make([]byte, 1<<20), 1<<20)
	out := json.NewEncoder(os.Stdout)
	for in.Scan() {
		var q query
		if err := json.Unmarshal(in.Bytes(), &q); err != nil {
			os.Exit(2)
		}
		var answer map[string]any
		if q.Target != nil {
			answer = readTarget(*q.Target)
		} else {
			answer = readForm(*q.ContentType)
		}
		if err := out.Encode(answer); err != nil {
			os.Exit(3)
		}
	}
}
