package policysource

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"

	"github.com/meshd/meshd/policy"
)

// Label marks a policy ConfigMap (any value).
const Label = "meshd.io/policy"

// Event reasons.
const (
	ReasonRejected = "PolicyRejected"
	ReasonAccepted = "PolicyAccepted"
)

// Options configure a Controller.
type Options struct {
	// MeshNamespace is meshd's own namespace: its policy ConfigMaps are
	// the mesh-wide rules (required).
	MeshNamespace string
	// Dir is the policy directory the controller writes (required; made
	// if missing).
	Dir string
	// Debounce gathers changes this long before a rebuild (default 200ms).
	Debounce time.Duration
	// Component names the reporter of Events (default meshd-controlplane).
	Component string
	// Leading, when set, is asked before each Event: only the elected
	// replica of several records them (every replica keeps Dir). nil:
	// always record.
	Leading func() bool
	Logger  *slog.Logger
}

// Controller keeps Options.Dir equal to the accepted policy ConfigMaps.
type Controller struct {
	cs   kubernetes.Interface
	o    Options
	log  *slog.Logger
	inf  cache.SharedIndexInformer
	fac  informers.SharedInformerFactory
	kick chan struct{}

	mu sync.Mutex
	// good is the accepted content per ConfigMap (namespace/name), with
	// the resourceVersion it was judged at.
	good   map[string]cmState
	judged map[string]string // namespace/name -> resourceVersion judged
	gen    int
}

type cmState struct {
	ns, name string
	uid      types.UID
	files    map[string]string // key -> content
}

// New prepares a controller; Run starts it.
func New(cs kubernetes.Interface, o Options) (*Controller, error) {
	if cs == nil || o.MeshNamespace == "" || o.Dir == "" {
		return nil, errors.New("policysource: a client, the mesh namespace and a directory are required")
	}
	if o.Debounce <= 0 {
		o.Debounce = 200 * time.Millisecond
	}
	if o.Component == "" {
		o.Component = "meshd-controlplane"
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if err := os.MkdirAll(o.Dir, 0o755); err != nil {
		return nil, fmt.Errorf("policysource: %w", err)
	}
	c := &Controller{cs: cs, o: o, log: o.Logger, kick: make(chan struct{}, 1), good: map[string]cmState{}, judged: map[string]string{}}
	c.fac = informers.NewSharedInformerFactoryWithOptions(cs, 10*time.Minute,
		informers.WithTweakListOptions(func(lo *metav1.ListOptions) { lo.LabelSelector = Label }))
	c.inf = c.fac.Core().V1().ConfigMaps().Informer()
	kick := func(any) {
		select {
		case c.kick <- struct{}{}:
		default:
		}
	}
	if _, err := c.inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: kick, UpdateFunc: func(_, o any) { kick(o) }, DeleteFunc: kick,
	}); err != nil {
		return nil, fmt.Errorf("policysource: %w", err)
	}
	return c, nil
}

// Run watches the ConfigMaps and rebuilds the directory until ctx ends.
func (c *Controller) Run(ctx context.Context) error {
	c.fac.Start(ctx.Done())
	defer c.fac.Shutdown()
	if !cache.WaitForCacheSync(ctx.Done(), c.inf.HasSynced) {
		if ctx.Err() != nil {
			return nil
		}
		return errors.New("policysource: the ConfigMap cache did not sync")
	}
	c.rebuild(ctx)
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-c.kick:
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(c.o.Debounce):
		}
		c.rebuild(ctx)
	}
}

// folder is where a namespace's files go.
func (c *Controller) folder(ns string) string {
	if ns == c.o.MeshNamespace {
		return policy.MeshDir
	}
	return ns
}

func policyKey(k string) bool {
	return (strings.HasSuffix(k, ".rego") && !strings.HasSuffix(k, "_test.rego")) ||
		strings.HasSuffix(k, ".yaml") || strings.HasSuffix(k, ".yml")
}

// rebuild judges every changed ConfigMap and writes the accepted set.
func (c *Controller) rebuild(ctx context.Context) {
	c.mu.Lock()
	defer c.mu.Unlock()
	var cms []*corev1.ConfigMap
	for _, o := range c.inf.GetStore().List() {
		if cm, ok := o.(*corev1.ConfigMap); ok {
			cms = append(cms, cm)
		}
	}
	sort.Slice(cms, func(i, j int) bool { return cms[i].Namespace+"/"+cms[i].Name < cms[j].Namespace+"/"+cms[j].Name })
	present := map[string]bool{}
	changed := false
	for _, cm := range cms {
		id := cm.Namespace + "/" + cm.Name
		present[id] = true
		if c.judged[id] == cm.ResourceVersion {
			continue
		}
		c.judged[id] = cm.ResourceVersion
		cand := cmState{ns: cm.Namespace, name: cm.Name, uid: cm.UID, files: map[string]string{}}
		for k, v := range cm.Data {
			if policyKey(k) {
				cand.files[k] = v
			}
		}
		trial := make(map[string]cmState, len(c.good)+1)
		for k, v := range c.good {
			trial[k] = v
		}
		trial[id] = cand
		if err := c.validate(ctx, trial); err != nil {
			msg := c.describe(err, cm)
			c.log.Warn("policysource: policy ConfigMap rejected; its last good content stays in force",
				"namespace", cm.Namespace, "configmap", cm.Name, "err", msg)
			c.event(ctx, cm, corev1.EventTypeWarning, ReasonRejected, "policy rejected, the last good one stays in force: "+msg)
			continue
		}
		c.good[id] = cand
		changed = true
		c.event(ctx, cm, corev1.EventTypeNormal, ReasonAccepted, "policy accepted ("+strconv.Itoa(len(cand.files))+" files)")
	}
	for id := range c.good {
		if !present[id] {
			delete(c.good, id)
			changed = true
		}
	}
	for id := range c.judged {
		if !present[id] {
			delete(c.judged, id)
		}
	}
	if changed || c.gen == 0 {
		if err := c.write(c.good); err != nil {
			c.log.Error("policysource: writing the policy directory", "dir", c.o.Dir, "err", err)
		}
	}
}

// fileName is a ConfigMap key's file in the policy tree.
func fileName(cm, key string) string { return cm + "." + key }

// validate compiles a candidate set in a scratch directory.
func (c *Controller) validate(ctx context.Context, set map[string]cmState) error {
	dir, err := os.MkdirTemp("", "meshd-policy-check-")
	if err != nil {
		return fmt.Errorf("policysource: %w", err)
	}
	defer os.RemoveAll(dir)
	if err := writeTree(dir, c.tree(set)); err != nil {
		return err
	}
	_, err = policy.Load(ctx, policy.Source{Dir: dir})
	return err
}

func (c *Controller) tree(set map[string]cmState) map[string]string {
	out := map[string]string{}
	for _, s := range set {
		for k, v := range s.files {
			out[filepath.Join(c.folder(s.ns), fileName(s.name, k))] = v
		}
	}
	return out
}

// describe turns a load error into key:line: reason for cm's keys (errors
// of other files, which the candidate broke, are named by their path).
func (c *Controller) describe(err error, cm *corev1.ConfigMap) string {
	var le *policy.LoadError
	if !errors.As(err, &le) {
		return err.Error()
	}
	prefix := c.folder(cm.Namespace) + "/" + cm.Name + "."
	parts := make([]string, 0, len(le.Errs))
	for _, fe := range le.Errs {
		f := filepath.ToSlash(fe.File)
		if k, ok := strings.CutPrefix(f, prefix); ok {
			f = k
		}
		parts = append(parts, f+":"+strconv.Itoa(fe.Line)+": "+fe.Reason)
	}
	return strings.Join(parts, "; ")
}

func (c *Controller) event(ctx context.Context, cm *corev1.ConfigMap, typ, reason, msg string) {
	if c.o.Leading != nil && !c.o.Leading() {
		return
	}
	now := metav1.Now()
	if len(msg) > 1000 {
		msg = msg[:1000]
	}
	ev := &corev1.Event{
		ObjectMeta: metav1.ObjectMeta{GenerateName: cm.Name + ".", Namespace: cm.Namespace},
		InvolvedObject: corev1.ObjectReference{Kind: "ConfigMap", APIVersion: "v1", Namespace: cm.Namespace, Name: cm.Name,
			UID: cm.UID, ResourceVersion: cm.ResourceVersion},
		Reason: reason, Message: msg, Type: typ, Count: 1,
		FirstTimestamp: now, LastTimestamp: now,
		Source:              corev1.EventSource{Component: c.o.Component},
		ReportingController: "meshd.io/" + c.o.Component, ReportingInstance: c.o.Component,
	}
	if _, err := c.cs.CoreV1().Events(cm.Namespace).Create(ctx, ev, metav1.CreateOptions{}); err != nil {
		c.log.Warn("policysource: could not record an Event", "namespace", cm.Namespace, "configmap", cm.Name, "err", err)
	}
}

// write swaps the accepted tree into Options.Dir: a new ..{gen} folder,
// the ..data symlink replaced by rename, and one top-level symlink per
// folder (the kubelet's ConfigMap volume layout, which config/watch and
// the policy loader follow).
func (c *Controller) write(set map[string]cmState) error {
	c.gen++
	gen := "..gen" + strconv.Itoa(c.gen) + "." + strconv.FormatInt(time.Now().UnixNano(), 36)
	if err := writeTree(filepath.Join(c.o.Dir, gen), c.tree(set)); err != nil {
		return err
	}
	tmp := filepath.Join(c.o.Dir, "..data_tmp")
	_ = os.Remove(tmp)
	if err := os.Symlink(gen, tmp); err != nil {
		return fmt.Errorf("policysource: %w", err)
	}
	old, _ := os.Readlink(filepath.Join(c.o.Dir, "..data"))
	if err := os.Rename(tmp, filepath.Join(c.o.Dir, "..data")); err != nil {
		return fmt.Errorf("policysource: %w", err)
	}
	folders := map[string]bool{}
	entries, err := os.ReadDir(filepath.Join(c.o.Dir, gen))
	if err != nil {
		return fmt.Errorf("policysource: %w", err)
	}
	for _, e := range entries {
		folders[e.Name()] = true
		link := filepath.Join(c.o.Dir, e.Name())
		if _, err := os.Lstat(link); err == nil {
			continue
		}
		if err := os.Symlink(filepath.Join("..data", e.Name()), link); err != nil {
			return fmt.Errorf("policysource: %w", err)
		}
	}
	top, err := os.ReadDir(c.o.Dir)
	if err != nil {
		return fmt.Errorf("policysource: %w", err)
	}
	for _, e := range top {
		if !strings.HasPrefix(e.Name(), ".") && !folders[e.Name()] {
			_ = os.Remove(filepath.Join(c.o.Dir, e.Name()))
		}
	}
	if old != "" && old != gen {
		_ = os.RemoveAll(filepath.Join(c.o.Dir, old))
	}
	c.log.Info("policysource: policy directory updated", "dir", c.o.Dir, "configmaps", len(set))
	return nil
}

func writeTree(root string, files map[string]string) error {
	if err := os.MkdirAll(root, 0o755); err != nil {
		return fmt.Errorf("policysource: %w", err)
	}
	for rel, content := range files {
		p := filepath.Join(root, rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return fmt.Errorf("policysource: %w", err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			return fmt.Errorf("policysource: %w", err)
		}
	}
	return nil
}
