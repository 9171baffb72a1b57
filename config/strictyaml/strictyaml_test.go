package strictyaml

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func TestDecode(t *testing.T) {
	type conf struct {
		Name string `yaml:"name"`
		N    int    `yaml:"n"`
	}
	var c conf
	if err := Decode([]byte("name: a\nn: 2\n---\n"), &c); err != nil || c.Name != "a" || c.N != 2 {
		t.Fatalf("Decode = %+v, %v", c, err)
	}
	for _, tc := range []struct{ doc, want string }{
		{"name: a\nbogus: 1\n", "line 2: field bogus not found"},
		{"name: a\nn: many\n", "line 2: cannot unmarshal"},
		{"name: a\n---\nname: b\n", "more than one YAML document"},
	} {
		if err := Decode([]byte(tc.doc), &c); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Decode(%q) = %v, want %q", tc.doc, err, tc.want)
		}
	}
	if err := Decode([]byte("# nothing\n"), &c); !errors.Is(err, ErrEmpty) {
		t.Errorf("empty: %v", err)
	}
}

func TestDocuments(t *testing.T) {
	docs, err := Documents([]byte("a: 1\n---\nnull\n---\n---\nb: 2\n"))
	if err != nil || len(docs) != 2 || Lookup(docs[1], "b").Value != "2" {
		t.Fatalf("Documents = %v, %v", docs, err)
	}
	if line, _, ok := Fields(docs[0], "doc", "b"); ok || line != 1 {
		t.Errorf("Fields: line %d ok %v", line, ok)
	}
	_, err = Documents([]byte("a: 1\nb: [\n"))
	if err == nil || ErrLine(err) < 2 {
		t.Errorf("syntax error: %v (line %d)", err, ErrLine(err))
	}
}

func TestDuration(t *testing.T) {
	var c struct {
		D Duration `yaml:"d"`
	}
	if err := Decode([]byte("d: 1m30s\n"), &c); err != nil || time.Duration(c.D) != 90*time.Second {
		t.Fatalf("1m30s: %v %v", time.Duration(c.D), err)
	}
	for in, want := range map[string]string{
		"d: 10\n":         "line 1: \"10\" is not a duration",
		"d: -1s\n":        "line 1: negative duration",
		"d: [1s]\n":       "line 1: want a duration",
		"x: 1\nd: soon\n": "line 2: \"soon\" is not a duration",
	} {
		if err := Decode([]byte(in), &c); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: %v, want an error containing %q", in, err, want)
		}
	}
}
