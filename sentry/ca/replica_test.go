package ca

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/meshd/meshd/certs"
)

// TestReplicaFollowsLeader: a follower (Leading false) restored from the
// leader's snapshots goes through the same rotation steps, signs with the
// same issuer, and never advances a rotation itself.
func TestReplicaFollowsLeader(t *testing.T) {
	clk := newClock()
	o := func(dir string, leading bool) Options {
		return Options{DataDir: dir, TrustDomain: td, WorkloadTTL: time.Minute, PropagationDelay: 10 * time.Second,
			RetireMargin: 5 * time.Second, Now: clk.Now, Leading: func() bool { return leading }}
	}
	ldir, fdir := filepath.Join(t.TempDir(), "l"), filepath.Join(t.TempDir(), "f")
	leader := open(t, o(ldir, true))
	snap, err := leader.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := snap["ca/0001/issuer.key"]; !ok || len(snap) < 4 {
		t.Fatalf("snapshot lacks the generation: %v", keys(snap))
	}
	if _, err := RestoreDir(fdir, snap); err != nil {
		t.Fatal(err)
	}
	follower := open(t, o(fdir, false))
	if !follower.ActiveRoot().Equal(leader.ActiveRoot()) {
		t.Fatal("the follower opened another root")
	}

	// A rotation staged on the follower is not its to run.
	m, _ := Generate(td, 24*time.Hour, clk.Now())
	if err := Stage(fdir, m, clk.Now()); err != nil {
		t.Fatal(err)
	}
	if err := follower.Tick(); err != nil {
		t.Fatal(err)
	}
	if len(follower.Bundle().Roots) != 1 {
		t.Fatal("a follower imported a staged rotation")
	}
	if err := os.RemoveAll(filepath.Join(fdir, stagedDir)); err != nil {
		t.Fatal(err)
	}

	// The leader runs it; the follower restores each step.
	if err := Stage(ldir, m, clk.Now()); err != nil {
		t.Fatal(err)
	}
	follow := func() {
		t.Helper()
		s, err := leader.Snapshot()
		if err != nil {
			t.Fatal(err)
		}
		if err := follower.Restore(s); err != nil {
			t.Fatal(err)
		}
		if follower.Bundle().Version != leader.Bundle().Version || !follower.ActiveRoot().Equal(leader.ActiveRoot()) {
			t.Fatalf("follower at bundle %d root %s, leader at %d %s", follower.Bundle().Version,
				follower.ActiveRoot().Subject, leader.Bundle().Version, leader.ActiveRoot().Subject)
		}
	}
	v := follower.Bundle()
	_ = leader.Tick()
	follow()
	select {
	case <-v.Changed():
	default:
		t.Fatal("the follower's watchers were not told of the new bundle")
	}
	if len(follower.Bundle().Roots) != 2 || len(bundleFile(t, fdir)) != 2 {
		t.Fatal("the follower did not publish the new root")
	}
	clk.Add(11 * time.Second)
	_ = follower.Tick() // its own clock says switch: it must not
	if follower.ActiveRoot().Equal(m.Root) {
		t.Fatal("the follower switched by itself")
	}
	_ = leader.Tick()
	follow()
	key, _ := certs.GenerateKey()
	id, _ := certs.NewIdentity("cluster.local", "default", "x")
	s, err := follower.Sign(id, &key.PublicKey)
	if err != nil || !s.Chain[0].Equal(m.Issuer) {
		t.Fatalf("the follower does not sign with the new issuer: %v", err)
	}
	if svid, _ := follower.GetX509SVID(); !svid.Certificates[1].Equal(m.Issuer) {
		t.Fatal("the follower's serving certificate is not from the new issuer")
	}
	clk.Add(time.Minute + 6*time.Second)
	_ = leader.Tick()
	follow()
	if r := bundleFile(t, fdir); len(r) != 1 || !r[0].Equal(m.Root) {
		t.Fatal("the follower kept the retired root")
	}
	if _, err := os.Stat(filepath.Join(fdir, genDir, "0001")); !errors.Is(err, os.ErrNotExist) {
		t.Fatal("the follower kept the retired generation's keys")
	}
	// Restoring the same state again changes nothing.
	before := follower.Bundle()
	follow()
	if follower.Bundle() != before {
		t.Fatal("an unchanged snapshot republished the bundle")
	}
}

func TestRestoreRejects(t *testing.T) {
	dir := t.TempDir()
	for name, files := range map[string]map[string][]byte{
		"no state":      {"ca/0001/root.pem": []byte("x")},
		"path escape":   {"state.json": []byte("{}"), "ca/../../etc/x.pem": []byte("x")},
		"unknown file":  {"state.json": []byte("{}"), "ca/0001/extra.txt": []byte("x")},
		"absolute path": {"state.json": []byte("{}"), "/etc/passwd": []byte("x")},
	} {
		if _, err := RestoreDir(dir, files); err == nil || !strings.Contains(err.Error(), "restore") {
			t.Errorf("%s: %v", name, err)
		}
	}
}

func keys(m map[string][]byte) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}
