package kubestore

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	authorizationv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	k8s "k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/leaderelection"
	"k8s.io/client-go/tools/leaderelection/resourcelock"

	"github.com/meshd/meshd/sentry/ca"
	kubetoken "github.com/meshd/meshd/sentry/token/kubernetes"
)

// Defaults of Options.
const (
	DefaultBundleConfigMap = "meshd-trust-bundle"
	DefaultLeaseDuration   = 15 * time.Second
	DefaultRenewDeadline   = 10 * time.Second
	DefaultRetryPeriod     = 2 * time.Second
	DefaultSyncInterval    = time.Second
	DefaultResyncInterval  = 30 * time.Second
	// BundleKey is the ConfigMap key of the PEM trust bundle.
	BundleKey = "ca.crt"
	// VersionAnnotation on the ConfigMap is the bundle version.
	VersionAnnotation = "meshd.io/trust-bundle-version"
	// ManagedByLabel marks the Secret and ConfigMaps sentry manages.
	ManagedByLabel = "app.kubernetes.io/managed-by"
)

// Options configure a Store.
type Options struct {
	Client k8s.Interface
	// Namespace and Secret name the Secret holding the CA; Lease the lease
	// of the leader election ("": the Secret's name).
	Namespace, Secret, Lease string
	// Identity of this replica in the Lease (required, unique per replica).
	Identity string
	// BundleConfigMap is the ConfigMap the trust bundle is published to
	// ("-": not published; "": DefaultBundleConfigMap).
	BundleConfigMap                           string
	LeaseDuration, RenewDeadline, RetryPeriod time.Duration
	// SyncInterval: how often the leader pushes and followers poll.
	SyncInterval time.Duration
	// ResyncInterval: how often the leader rescans namespaces for the
	// bundle ConfigMap even when the bundle did not change.
	ResyncInterval time.Duration
	Logger         *slog.Logger
}

// Store is one replica's link to the shared CA.
type Store struct {
	o       Options
	log     *slog.Logger
	leading atomic.Bool
	existed bool

	mu         sync.Mutex
	lastPushed map[string][]byte
	seen       bool // lastPushed holds a state read from or written to the Secret
	lastBundle uint64
	lastResync time.Time
}

// New checks o and returns a Store.
func New(o Options) (*Store, error) {
	switch {
	case o.Client == nil:
		return nil, errors.New("kubestore: a client is required")
	case o.Namespace == "" || o.Secret == "":
		return nil, errors.New("kubestore: the Secret's namespace and name are required")
	case o.Identity == "":
		return nil, errors.New("kubestore: a replica identity is required")
	}
	if o.Lease == "" {
		o.Lease = o.Secret
	}
	if o.BundleConfigMap == "" {
		o.BundleConfigMap = DefaultBundleConfigMap
	}
	if o.LeaseDuration == 0 {
		o.LeaseDuration = DefaultLeaseDuration
	}
	if o.RenewDeadline == 0 {
		o.RenewDeadline = DefaultRenewDeadline
	}
	if o.RetryPeriod == 0 {
		o.RetryPeriod = DefaultRetryPeriod
	}
	if !(o.RetryPeriod < o.RenewDeadline && o.RenewDeadline < o.LeaseDuration) {
		return nil, fmt.Errorf("kubestore: want retry period %s < renew deadline %s < lease duration %s",
			o.RetryPeriod, o.RenewDeadline, o.LeaseDuration)
	}
	if o.SyncInterval <= 0 {
		o.SyncInterval = DefaultSyncInterval
	}
	if o.ResyncInterval <= 0 {
		o.ResyncInterval = DefaultResyncInterval
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return &Store{o: o, log: o.Logger}, nil
}

// Leading reports whether this replica leads (for ca.Options.Leading).
func (s *Store) Leading() bool { return s.leading.Load() }

// CheckAccess asks the API server whether sentry has the RBAC the store
// needs and names what is missing.
func (s *Store) CheckAccess(ctx context.Context) error {
	for _, ra := range []authorizationv1.ResourceAttributes{
		{Namespace: s.o.Namespace, Resource: "secrets", Verb: "get", Name: s.o.Secret},
		{Namespace: s.o.Namespace, Resource: "secrets", Verb: "create"},
		{Namespace: s.o.Namespace, Resource: "secrets", Verb: "update", Name: s.o.Secret},
		{Namespace: s.o.Namespace, Group: "coordination.k8s.io", Resource: "leases", Verb: "get", Name: s.o.Lease},
		{Namespace: s.o.Namespace, Group: "coordination.k8s.io", Resource: "leases", Verb: "create"},
		{Namespace: s.o.Namespace, Group: "coordination.k8s.io", Resource: "leases", Verb: "update", Name: s.o.Lease},
		{Resource: "pods", Verb: "list"},
		{Resource: "configmaps", Verb: "get"},
		{Resource: "configmaps", Verb: "create"},
		{Resource: "configmaps", Verb: "update"},
	} {
		if s.o.BundleConfigMap == "-" && (ra.Resource == "pods" || ra.Resource == "configmaps") {
			continue
		}
		r, err := s.o.Client.AuthorizationV1().SelfSubjectAccessReviews().Create(ctx,
			&authorizationv1.SelfSubjectAccessReview{Spec: authorizationv1.SelfSubjectAccessReviewSpec{ResourceAttributes: &ra}},
			metav1.CreateOptions{})
		if err != nil {
			return fmt.Errorf("kubestore: cannot check sentry's permissions with the API server: %w", err)
		}
		if !r.Status.Allowed {
			res := ra.Resource
			if ra.Group != "" {
				res += "." + ra.Group
			}
			where := "cluster-wide"
			if ra.Namespace != "" {
				where = "in namespace " + ra.Namespace
			}
			return fmt.Errorf("kubestore: RBAC: sentry may not %q %s %s (%s)", ra.Verb, res, where, r.Status.Reason)
		}
	}
	return nil
}

// Prepare runs before ca.Open: if the Secret exists, its CA is written
// into dataDir, so Open loads the shared CA instead of making one.
func (s *Store) Prepare(ctx context.Context, dataDir string) error {
	sec, err := s.o.Client.CoreV1().Secrets(s.o.Namespace).Get(ctx, s.o.Secret, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		s.log.Info("kubestore: no CA Secret yet: this replica creates the CA", "secret", s.o.Namespace+"/"+s.o.Secret)
		return nil
	case err != nil:
		return fmt.Errorf("kubestore: read Secret %s/%s: %w", s.o.Namespace, s.o.Secret, err)
	}
	files, err := decode(sec)
	if err != nil {
		return err
	}
	if _, err := ca.RestoreDir(dataDir, files); err != nil {
		return fmt.Errorf("kubestore: %w", err)
	}
	s.existed = true
	s.seen, s.lastPushed = true, files
	s.log.Info("kubestore: took the CA from the Secret", "secret", s.o.Namespace+"/"+s.o.Secret)
	return nil
}

// Init runs after ca.Open: a replica that found no Secret creates it from
// its new CA; if another replica created it first, its CA is restored
// into auth (nothing has been signed yet).
func (s *Store) Init(ctx context.Context, auth *ca.Authority) error {
	if s.existed {
		return nil
	}
	files, err := auth.Snapshot()
	if err != nil {
		return fmt.Errorf("kubestore: %w", err)
	}
	sec := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: s.o.Secret, Namespace: s.o.Namespace,
			Labels: map[string]string{ManagedByLabel: "meshd-sentry"}},
		Type: corev1.SecretTypeOpaque,
		Data: encode(files),
	}
	_, err = s.o.Client.CoreV1().Secrets(s.o.Namespace).Create(ctx, sec, metav1.CreateOptions{})
	if apierrors.IsAlreadyExists(err) {
		s.log.Info("kubestore: another replica created the CA first: taking it")
		return s.pull(ctx, auth)
	}
	if err != nil {
		return fmt.Errorf("kubestore: create Secret %s/%s: %w", s.o.Namespace, s.o.Secret, err)
	}
	s.mu.Lock()
	s.lastPushed, s.seen = files, true
	s.mu.Unlock()
	s.log.Info("kubestore: CA stored in the Secret", "secret", s.o.Namespace+"/"+s.o.Secret)
	return nil
}

// Run takes part in the leader election and syncs the CA until ctx ends.
func (s *Store) Run(ctx context.Context, auth *ca.Authority) error {
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		s.elect(ctx, auth)
	}()
	t := time.NewTicker(s.o.SyncInterval)
	defer t.Stop()
	for {
		if err := s.sync(ctx, auth); err != nil && ctx.Err() == nil {
			s.log.Warn("kubestore: sync failed; retrying", "leading", s.Leading(), "err", err)
		}
		select {
		case <-ctx.Done():
			wg.Wait()
			return nil
		case <-t.C:
		}
	}
}

func (s *Store) elect(ctx context.Context, auth *ca.Authority) {
	lock := &resourcelock.LeaseLock{
		LeaseMeta:  metav1.ObjectMeta{Name: s.o.Lease, Namespace: s.o.Namespace},
		Client:     s.o.Client.CoordinationV1(),
		LockConfig: resourcelock.ResourceLockConfig{Identity: s.o.Identity},
	}
	for ctx.Err() == nil {
		le, err := leaderelection.NewLeaderElector(leaderelection.LeaderElectionConfig{
			Lock: lock, Name: "meshd-sentry",
			LeaseDuration: s.o.LeaseDuration, RenewDeadline: s.o.RenewDeadline, RetryPeriod: s.o.RetryPeriod,
			ReleaseOnCancel: true,
			Callbacks: leaderelection.LeaderCallbacks{
				OnStartedLeading: func(lctx context.Context) {
					// Act on the newest state only: take the Secret first.
					if err := s.pull(lctx, auth); err != nil {
						s.log.Error("kubestore: elected, but cannot read the CA Secret; not leading", "err", err)
						return
					}
					s.mu.Lock()
					s.lastBundle = 0 // publish the bundle ConfigMaps at once
					s.mu.Unlock()
					s.leading.Store(true)
					s.log.Info("kubestore: leading: this replica advances root rotations", "identity", s.o.Identity)
				},
				OnStoppedLeading: func() {
					if s.leading.Swap(false) {
						s.log.Info("kubestore: no longer leading", "identity", s.o.Identity)
					}
				},
				OnNewLeader: func(id string) {
					if id != s.o.Identity {
						s.log.Info("kubestore: following", "leader", id)
					}
				},
			},
		})
		if err != nil {
			s.log.Error("kubestore: leader election", "err", err)
			return
		}
		le.Run(ctx) // returns when leadership is lost or ctx ends
		s.leading.Store(false)
	}
}

// sync pushes (leader) or pulls (follower) the CA state, and publishes the
// bundle ConfigMaps (leader).
func (s *Store) sync(ctx context.Context, auth *ca.Authority) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if !s.Leading() {
		return s.pull(ctx, auth)
	}
	if err := s.push(ctx, auth); err != nil {
		return err
	}
	if s.o.BundleConfigMap == "-" {
		return nil
	}
	return s.publishBundle(ctx, auth.Bundle())
}

// pull restores the Secret's CA into auth if its state is not the one
// last read or written (compared by content: a rotation staged in the
// Secret changes nothing here).
func (s *Store) pull(ctx context.Context, auth *ca.Authority) error {
	sec, err := s.o.Client.CoreV1().Secrets(s.o.Namespace).Get(ctx, s.o.Secret, metav1.GetOptions{})
	if err != nil {
		return fmt.Errorf("kubestore: read Secret: %w", err)
	}
	files, err := decode(sec)
	if err != nil {
		return err
	}
	s.mu.Lock()
	same := s.seen && equal(files, s.lastPushed)
	s.mu.Unlock()
	if same {
		return nil
	}
	before := auth.Bundle().Version
	if err := auth.Restore(files); err != nil {
		return fmt.Errorf("kubestore: %w", err)
	}
	s.mu.Lock()
	s.lastPushed, s.seen = files, true
	s.mu.Unlock()
	if v := auth.Bundle().Version; v != before {
		s.log.Info("kubestore: took the leader's CA state", "bundle_version", v)
	}
	return nil
}

// push is the leader's sync: it takes a rotation staged in the Secret
// (`sentry rotate-root --ca-secret`), and writes the authority's state to
// the Secret if it changed. A Secret whose state is not the one this leader
// last read or wrote (a previous leader wrote after it) is taken, never
// overwritten.
func (s *Store) push(ctx context.Context, auth *ca.Authority) error {
	sec, err := s.o.Client.CoreV1().Secrets(s.o.Namespace).Get(ctx, s.o.Secret, metav1.GetOptions{})
	if err != nil {
		return fmt.Errorf("kubestore: read Secret: %w", err)
	}
	inSecret, err := decode(sec)
	if err != nil {
		return err
	}
	s.mu.Lock()
	last := s.lastPushed
	s.mu.Unlock()
	if !equal(inSecret, last) {
		if err := auth.Restore(inSecret); err != nil {
			return fmt.Errorf("kubestore: %w", err)
		}
		s.mu.Lock()
		s.lastPushed, s.seen = inSecret, true
		s.mu.Unlock()
		s.log.Warn("kubestore: the Secret holds a CA state this leader had not seen (written by a previous leader): took it",
			"bundle_version", auth.Bundle().Version)
		return nil
	}
	if staged := stagedOf(sec); len(staged) > 0 {
		if sec, err = s.takeStaged(ctx, auth, sec, staged); err != nil {
			return err
		}
	}
	files, err := auth.Snapshot()
	if err != nil {
		return fmt.Errorf("kubestore: %w", err)
	}
	if equal(files, last) {
		return nil
	}
	sec.Data = encode(files)
	// Update carries the resourceVersion read: a concurrent write makes it
	// fail (Conflict) and the next sync starts over.
	if _, err := s.o.Client.CoreV1().Secrets(s.o.Namespace).Update(ctx, sec, metav1.UpdateOptions{}); err != nil {
		return fmt.Errorf("kubestore: write Secret: %w", err)
	}
	s.mu.Lock()
	s.lastPushed, s.seen = files, true
	s.mu.Unlock()
	s.log.Info("kubestore: CA state written to the Secret", "bundle_version", auth.Bundle().Version)
	return nil
}

// takeStaged stages a rotation found in the Secret in the leader's data
// directory (the CA imports it on its next tick) and removes it from the
// Secret, refused or not.
func (s *Store) takeStaged(ctx context.Context, auth *ca.Authority, sec *corev1.Secret, staged map[string][]byte) (*corev1.Secret, error) {
	m, err := ca.MaterialFromFiles(staged)
	if err == nil {
		err = auth.StageMaterial(m)
	}
	if err != nil {
		s.log.Error("kubestore: rotation staged in the Secret refused (removed from the Secret)", "err", err)
	} else {
		s.log.Info("kubestore: took the rotation staged in the Secret", "root_not_after", m.Root.NotAfter)
	}
	for k := range sec.Data {
		if strings.HasPrefix(k, StagedPrefix) {
			delete(sec.Data, k)
		}
	}
	upd, uerr := s.o.Client.CoreV1().Secrets(s.o.Namespace).Update(ctx, sec, metav1.UpdateOptions{})
	if uerr != nil {
		return nil, fmt.Errorf("kubestore: remove the staged rotation from the Secret: %w", uerr)
	}
	return upd, nil
}

// StagedPrefix marks the Secret keys of a rotation staged for the leader
// ("staged__root.pem", "staged__issuer.pem", "staged__issuer.key", and
// optionally "staged__root.key").
const StagedPrefix = "staged__"

func stagedOf(sec *corev1.Secret) map[string][]byte {
	out := map[string][]byte{}
	for k, b := range sec.Data {
		if n, ok := strings.CutPrefix(k, StagedPrefix); ok {
			out[n] = b
		}
	}
	return out
}

// StageRotation stages CA material m in the Secret namespace/name for the
// leader to rotate to (what `sentry rotate-root --ca-secret` does). Only one
// rotation can be staged at a time.
func StageRotation(ctx context.Context, client k8s.Interface, namespace, name string, m *ca.Material) error {
	sec, err := client.CoreV1().Secrets(namespace).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return fmt.Errorf("kubestore: read Secret %s/%s: %w", namespace, name, err)
	}
	if _, err := decode(sec); err != nil {
		return err
	}
	if len(stagedOf(sec)) > 0 {
		return fmt.Errorf("kubestore: a rotation is already staged in Secret %s/%s (the leader takes it within seconds; is a sentry leading?)", namespace, name)
	}
	files, err := ca.MaterialFiles(m)
	if err != nil {
		return err
	}
	for n, b := range files {
		sec.Data[StagedPrefix+n] = b
	}
	if _, err := client.CoreV1().Secrets(namespace).Update(ctx, sec, metav1.UpdateOptions{}); err != nil {
		return fmt.Errorf("kubestore: stage the rotation in Secret %s/%s: %w", namespace, name, err)
	}
	return nil
}

// ReadSnapshot returns the CA state held in the Secret namespace/name.
func ReadSnapshot(ctx context.Context, client k8s.Interface, namespace, name string) (map[string][]byte, error) {
	sec, err := client.CoreV1().Secrets(namespace).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return nil, fmt.Errorf("kubestore: read Secret %s/%s: %w", namespace, name, err)
	}
	return decode(sec)
}

// publishBundle writes the bundle ConfigMap into every namespace with
// meshd pods, when the bundle changed or every ResyncInterval.
func (s *Store) publishBundle(ctx context.Context, b *ca.Bundle) error {
	s.mu.Lock()
	due := b.Version != s.lastBundle || time.Since(s.lastResync) >= s.o.ResyncInterval
	s.mu.Unlock()
	if !due {
		return nil
	}
	pods, err := s.o.Client.CoreV1().Pods("").List(ctx, metav1.ListOptions{ResourceVersion: "0"})
	if err != nil {
		return fmt.Errorf("kubestore: list pods (for the trust bundle ConfigMaps): %w", err)
	}
	nss := map[string]bool{}
	for _, p := range pods.Items {
		if p.Annotations[kubetoken.AnnotationAppID] != "" || p.Annotations[kubetoken.DaprAnnotationAppID] != "" {
			nss[p.Namespace] = true
		}
	}
	names := make([]string, 0, len(nss))
	for ns := range nss {
		names = append(names, ns)
	}
	sort.Strings(names)
	var errs []error
	for _, ns := range names {
		if err := s.writeConfigMap(ctx, ns, b); err != nil {
			errs = append(errs, err)
		}
	}
	if len(errs) == 0 {
		s.mu.Lock()
		s.lastBundle, s.lastResync = b.Version, time.Now()
		s.mu.Unlock()
	}
	return errors.Join(errs...)
}

func (s *Store) writeConfigMap(ctx context.Context, ns string, b *ca.Bundle) error {
	version := strconv.FormatUint(b.Version, 10)
	cms := s.o.Client.CoreV1().ConfigMaps(ns)
	cm, err := cms.Get(ctx, s.o.BundleConfigMap, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		_, err = cms.Create(ctx, &corev1.ConfigMap{
			ObjectMeta: metav1.ObjectMeta{Name: s.o.BundleConfigMap, Namespace: ns,
				Labels:      map[string]string{ManagedByLabel: "meshd-sentry"},
				Annotations: map[string]string{VersionAnnotation: version}},
			Data: map[string]string{BundleKey: string(b.PEM)},
		}, metav1.CreateOptions{})
		if err == nil {
			s.log.Info("kubestore: trust bundle ConfigMap created", "namespace", ns, "bundle_version", b.Version)
		}
		return wrapCM(err, ns)
	}
	if err != nil {
		return wrapCM(err, ns)
	}
	if cm.Data[BundleKey] == string(b.PEM) && cm.Annotations[VersionAnnotation] == version {
		return nil
	}
	if cm.Data == nil {
		cm.Data = map[string]string{}
	}
	if cm.Annotations == nil {
		cm.Annotations = map[string]string{}
	}
	cm.Data[BundleKey] = string(b.PEM)
	cm.Annotations[VersionAnnotation] = version
	if _, err := cms.Update(ctx, cm, metav1.UpdateOptions{}); err != nil {
		return wrapCM(err, ns)
	}
	s.log.Info("kubestore: trust bundle ConfigMap updated", "namespace", ns, "bundle_version", b.Version)
	return nil
}

func wrapCM(err error, ns string) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("kubestore: trust bundle ConfigMap in namespace %s: %w", ns, err)
}

// Secret keys may hold only [-._a-zA-Z0-9]: "/" is written "__".
func encode(files map[string][]byte) map[string][]byte {
	out := make(map[string][]byte, len(files))
	for p, b := range files {
		out[strings.ReplaceAll(p, "/", "__")] = b
	}
	return out
}

func decode(sec *corev1.Secret) (map[string][]byte, error) {
	if len(sec.Data) == 0 {
		return nil, fmt.Errorf("kubestore: Secret %s/%s holds no CA", sec.Namespace, sec.Name)
	}
	out := make(map[string][]byte, len(sec.Data))
	for k, b := range sec.Data {
		if strings.HasPrefix(k, StagedPrefix) {
			continue // a rotation staged for the leader, not state
		}
		out[strings.ReplaceAll(k, "__", "/")] = b
	}
	return out, nil
}

func equal(a, b map[string][]byte) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || !bytes.Equal(v, w) {
			return false
		}
	}
	return true
}
