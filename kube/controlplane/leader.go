package controlplane

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/leaderelection"
	"k8s.io/client-go/tools/leaderelection/resourcelock"
)

// LeaseName is the Lease in the control plane's namespace that elects the
// replica whose writers run.
const LeaseName = "meshd-controlplane"

// Defaults of Election (client-go's usual ones, as kube-controller-manager).
const (
	DefaultLeaseDuration = 15 * time.Second
	DefaultRenewDeadline = 10 * time.Second
	DefaultRetryPeriod   = 2 * time.Second
)

// Election configures the leader election of the writers (the app Services
// controller and the Events on policy ConfigMaps). The webhook, the policy
// directory and xDS run on every replica.
type Election struct {
	// Disabled runs the writers on this replica unconditionally (one
	// replica only).
	Disabled bool
	// Identity of this replica in the Lease ("": $POD_NAME, else the host
	// name; a random suffix is added either way, so a restarted replica is
	// a new holder).
	Identity string
	// LeaseDuration, RenewDeadline and RetryPeriod as client-go's
	// leaderelection; zero: the defaults above.
	LeaseDuration, RenewDeadline, RetryPeriod time.Duration
}

func (e *Election) setDefaults() error {
	if e.LeaseDuration == 0 {
		e.LeaseDuration = DefaultLeaseDuration
	}
	if e.RenewDeadline == 0 {
		e.RenewDeadline = DefaultRenewDeadline
	}
	if e.RetryPeriod == 0 {
		e.RetryPeriod = DefaultRetryPeriod
	}
	if e.RetryPeriod <= 0 || e.RetryPeriod >= e.RenewDeadline || e.RenewDeadline >= e.LeaseDuration {
		return fmt.Errorf("controlplane: leader election: want 0 < --leader-elect-retry-period (%s) < --leader-elect-renew-deadline (%s) < --leader-elect-lease-duration (%s)",
			e.RetryPeriod, e.RenewDeadline, e.LeaseDuration)
	}
	if e.Identity == "" {
		e.Identity = os.Getenv("POD_NAME")
	}
	if e.Identity == "" {
		h, err := os.Hostname()
		if err != nil {
			return fmt.Errorf("controlplane: leader election identity: %w", err)
		}
		e.Identity = h
	}
	var b [4]byte
	if _, err := rand.Read(b[:]); err != nil {
		return fmt.Errorf("controlplane: %w", err)
	}
	e.Identity += "_" + hex.EncodeToString(b[:])
	return nil
}

// leaderJob is started when this replica is elected and its context ends
// when it stops leading. An error it returns stops the process.
type leaderJob func(ctx context.Context) error

// elector runs the leader-only jobs while this replica holds the Lease.
type elector struct {
	cs        kubernetes.Interface
	namespace string
	e         Election
	log       *slog.Logger
	jobs      []leaderJob
	leading   atomic.Bool
}

// Leading reports whether this replica holds the Lease now.
func (el *elector) Leading() bool { return el.leading.Load() }

// Run contends for the Lease until ctx ends: elected, it runs the jobs
// until it stops leading (the Lease is released when ctx ends, so another
// replica takes over without waiting for it to expire), then contends
// again.
func (el *elector) Run(ctx context.Context) error {
	lock := &resourcelock.LeaseLock{
		LeaseMeta:  metav1.ObjectMeta{Name: LeaseName, Namespace: el.namespace},
		Client:     el.cs.CoordinationV1(),
		LockConfig: resourcelock.ResourceLockConfig{Identity: el.e.Identity},
	}
	for ctx.Err() == nil {
		rctx, cancel := context.WithCancel(ctx)
		started := make(chan context.Context, 1)
		le, err := leaderelection.NewLeaderElector(leaderelection.LeaderElectionConfig{
			Lock: lock, Name: LeaseName,
			LeaseDuration: el.e.LeaseDuration, RenewDeadline: el.e.RenewDeadline, RetryPeriod: el.e.RetryPeriod,
			ReleaseOnCancel: true,
			Callbacks: leaderelection.LeaderCallbacks{
				OnStartedLeading: func(lctx context.Context) {
					if lctx.Err() != nil { // already over (client-go calls this in a goroutine)
						return
					}
					el.leading.Store(true)
					el.log.Info("controlplane: leading: this replica runs the app Services controller and records policy Events", "identity", el.e.Identity)
					started <- lctx
				},
				OnStoppedLeading: func() {
					if el.leading.Swap(false) {
						el.log.Info("controlplane: no longer leading", "identity", el.e.Identity)
					}
				},
				OnNewLeader: func(id string) {
					if id != el.e.Identity {
						el.log.Info("controlplane: following", "leader", id)
					}
				},
			},
		})
		if err != nil {
			cancel()
			return fmt.Errorf("controlplane: leader election: %w", err)
		}
		done := make(chan struct{})
		go func() { le.Run(rctx); close(done) }() // returns when leadership is lost or rctx ends
		var jobErr error
		select {
		case <-done:
		case lctx := <-started:
			// The jobs of this term end before the next term starts.
			jobErr = runJobs(lctx, el.jobs)
			cancel()
			<-done
		}
		el.leading.Store(false)
		cancel()
		if jobErr != nil {
			return jobErr
		}
	}
	return nil
}

// runJobs runs jobs until ctx ends; the first error stops the others and
// is returned.
func runJobs(ctx context.Context, jobs []leaderJob) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		wg    sync.WaitGroup
		first error
		once  sync.Once
	)
	for _, job := range jobs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := job(ctx); err != nil && ctx.Err() == nil {
				once.Do(func() { first = err })
				cancel()
			}
		}()
	}
	wg.Wait()
	return first
}
