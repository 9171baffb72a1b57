package chaos

import (
	"context"
	"syscall"
	"testing"
	"time"
)

// recoveryRun is one fault on one of two instances under 100 calls/s
// (GETs and POSTs, HTTP/1.1 and HTTP/2), and what the calls saw.
type recoveryRun struct {
	name  string
	extra []string // the sidecars' flags
	hold  time.Duration
	after time.Duration // load after the heal
	// stop the instance's sidecar (SIGSTOP) rather than kill its app
	stopSidecar bool
}

func (rr recoveryRun) run(t *testing.T) Result {
	m := startLoopMesh(t, 2, rr.extra...)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	load := &Load{BaseURL: m.caller.HTTPURL(), App: "echo", Rate: 100, Prefix: "rec-", H2C: true, Timeout: 30 * time.Second}
	done := make(chan []Call)
	go func() { done <- load.Run(ctx) }()
	time.Sleep(time.Second)
	victim := m.inst[0]
	detected := watchEjection(ctx, m.caller, victim.sidecar.Ports.InternalAddr(), len(m.caller.Log()))
	w := Window{Start: time.Now(), Instance: victim.name}
	port := victim.app.Port
	if rr.stopSidecar {
		if err := victim.sidecar.Signal(syscall.SIGSTOP); err != nil {
			t.Fatal(err)
		}
	} else {
		victim.app.Kill()
	}
	time.Sleep(rr.hold)
	if rr.stopSidecar {
		if err := victim.sidecar.Signal(syscall.SIGCONT); err != nil {
			t.Fatal(err)
		}
	} else {
		victim.startApp(t, m.b, port)
	}
	w.End = time.Now()
	time.Sleep(rr.after)
	cancel()
	calls := <-done
	w.Detect = detected()
	rec, err := ReadRecord(m.records()...)
	if err != nil {
		t.Fatal(err)
	}
	r := Check(rr.name, calls, rec, w)
	t.Log(r.String())
	if r.Unreported != 0 || r.Lost != 0 || r.Duplicated != 0 || r.GETFailedAfterDetect != 0 {
		t.Errorf("unreported %d, lost %d, POST twice %d, GET failed after detection %d: want 0 each",
			r.Unreported, r.Lost, r.Duplicated, r.GETFailedAfterDetect)
	}
	if w.Detect.IsZero() {
		t.Errorf("the caller never ejected %s", victim.name)
	}
	return r
}

// TestLoopbackRecoveryChecked (#18: "recovery after a fault is 5–11 s"):
// an ejected instance among healthy ones is checked out of band (the
// caller asks its sidecar every 500ms whether it and its app would serve)
// and is back within about a second of its recovery, instead of when its
// ejection time is up; while its checks fail its ejection time is
// extended, so no call goes to it. Without checks (--ejection-check-interval 0,
// the behaviour before) the same fault recovers only when the ejection
// time (5 s, then 10 s after the failed call on its return) is up.
func TestLoopbackRecoveryChecked(t *testing.T) {
	const hold = 6 * time.Second // past the first ejection time (5 s)
	for _, rr := range []struct {
		recoveryRun
		maxMs, minMs float64
	}{
		{recoveryRun{name: "app killed, checks", hold: hold, after: 4 * time.Second}, 2000, 0},
		{recoveryRun{name: "app killed, no checks", hold: hold, after: 11 * time.Second,
			extra: []string{"--ejection-check-interval", "0"}}, 0, 3000},
		{recoveryRun{name: "sidecar stopped, checks", hold: 4 * time.Second, after: 4 * time.Second, stopSidecar: true}, 2500, 0},
	} {
		t.Run(rr.name, func(t *testing.T) {
			r := rr.run(t)
			switch {
			case r.RecoverMs < 0:
				t.Fatalf("the instance never served again")
			case rr.maxMs > 0 && r.RecoverMs > rr.maxMs:
				t.Fatalf("back %.0fms after the fault was healed; want within %.0fms (the check interval is 500ms)", r.RecoverMs, rr.maxMs)
			case r.RecoverMs < rr.minMs:
				t.Fatalf("back %.0fms after the fault was healed without checks; want the ejection time (over %.0fms)", r.RecoverMs, rr.minMs)
			}
		})
	}
}
