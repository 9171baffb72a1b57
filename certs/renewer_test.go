package certs

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

// renewingFetcher is a Fetcher and Renewer: Fetch is the bootstrap (token)
// path, Renew the SVID path; refuse makes Renew answer ErrRenewalRefused.
type renewingFetcher struct {
	*testFetcher
	mu        sync.Mutex
	refuse    bool
	renewals  int
	presented []*x509svid.SVID
	answer    answerFunc
}

func (r *renewingFetcher) Renew(ctx context.Context, csrPEM []byte, cur *x509svid.SVID) (*Issued, error) {
	r.mu.Lock()
	r.presented = append(r.presented, cur)
	refuse := r.refuse
	r.mu.Unlock()
	if refuse {
		return nil, errors.Join(ErrRenewalRefused, errors.New("Unauthenticated"))
	}
	iss, err := r.answer(ctx, csrPEM)
	if err == nil {
		r.mu.Lock()
		r.renewals++
		r.mu.Unlock()
	}
	return iss, err
}

func (r *renewingFetcher) counts() (renewals, fetches int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.renewals, len(r.callTimes())
}

// TestSourceRenewsWithSVIDAndRebootstraps: with a Renewer, the first
// certificate comes from Fetch and every renewal from Renew presenting the
// SVID being replaced; when Renew is refused the Source bootstraps again
// through Fetch at once.
func TestSourceRenewsWithSVIDAndRebootstraps(t *testing.T) {
	t.Parallel()
	ca := newTestCA(t, "example.org")
	ident := testIdentity(t, "example.org", "default", "orders")
	const ttl = 2 * time.Second
	ans := ca.answerer(ident.ID(), ttl)
	f := &renewingFetcher{testFetcher: newTestFetcher(ans), answer: ans}
	s := newTestSource(t, f, SourceOptions{Identity: ident, MinBackoff: 10 * time.Millisecond, MaxBackoff: 50 * time.Millisecond})
	first := currentLeaf(t, s)

	waitFor(t, 3*ttl, "2 rotations", func() bool { return s.Rotations() >= 2 })
	renewals, fetches := f.counts()
	if fetches != 1 || renewals < 2 {
		t.Fatalf("after 2 rotations: %d fetches, %d renewals; want 1 fetch (bootstrap) and only renewals after it", fetches, renewals)
	}
	f.mu.Lock()
	if !f.presented[0].Certificates[0].Equal(first) {
		t.Fatal("the first renewal did not present the bootstrap SVID")
	}
	f.mu.Unlock()

	f.mu.Lock()
	f.refuse = true
	f.mu.Unlock()
	rot := s.Rotations()
	waitFor(t, 3*ttl, "a rotation after renewal was refused", func() bool { return s.Rotations() > rot })
	if _, fetches := f.counts(); fetches < 2 {
		t.Fatalf("renewal refused, yet no bootstrap through Fetch (%d fetches)", fetches)
	}
	if _, err := s.GetX509SVID(); err != nil {
		t.Fatalf("GetX509SVID after re-bootstrap: %v", err)
	}
}
