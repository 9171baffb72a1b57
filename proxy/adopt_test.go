package proxy

import (
	"net/http"
	"net/http/httptest"
	"testing"
)

// adopter is a server writer that takes header maps (as h1's and h2's do).
type adopter struct {
	http.ResponseWriter
	took http.Header
}

func (a *adopter) AdoptHeader(h http.Header) bool { a.took = h; return true }

type unwrapper struct{ http.ResponseWriter }

func (u unwrapper) Unwrap() http.ResponseWriter { return u.ResponseWriter }

// TestAdoptHeader: adoptHeader reaches the server's writer through the
// proxy's wrappers (Unwrap) and not through a wrapper that hides it, nor on
// a writer that cannot adopt (net/http's).
func TestAdoptHeader(t *testing.T) {
	h := http.Header{"X-A": {"1"}}
	a := &adopter{ResponseWriter: httptest.NewRecorder()}
	if !adoptHeader(unwrapper{unwrapper{a}}, h) || a.took["X-A"] == nil {
		t.Fatal("not adopted through two Unwrap wrappers")
	}
	b := &adopter{ResponseWriter: httptest.NewRecorder()}
	if adoptHeader(struct{ http.ResponseWriter }{b}, h) || b.took != nil {
		t.Fatal("adopted through a wrapper without Unwrap")
	}
	if adoptHeader(unwrapper{httptest.NewRecorder()}, h) {
		t.Fatal("adopted by a writer without AdoptHeader")
	}
}
