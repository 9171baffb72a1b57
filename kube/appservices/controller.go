package appservices

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/workqueue"
)

// Labels and names of the Services the controller keeps.
const (
	LabelAppID     = "meshd.io/app-id"
	LabelManagedBy = "app.kubernetes.io/managed-by"
	ManagedBy      = "meshd"
	PortName       = "meshd-internal"
	Port           = 50002
	// suffix keeps the Service apart from the app's own Service of the
	// same name (Dapr's is "-dapr").
	suffix = "-meshd"
)

// ServiceName is the name of app's Service: {app}-meshd, or, when that is
// longer than a DNS label, a prefix of the app ID and a hash of all of it.
func ServiceName(app string) string {
	if len(app)+len(suffix) <= 63 {
		return app + suffix
	}
	h := sha256.Sum256([]byte(app))
	return strings.TrimRight(app[:63-len(suffix)-9], "-") + "-" + hex.EncodeToString(h[:4]) + suffix
}

// Options configure a Controller.
type Options struct {
	// Namespace limits the controller to one namespace ("": all).
	Namespace string
	// Resync re-delivers the cached objects this often (default 10m).
	Resync time.Duration
	Logger *slog.Logger
}

// Controller keeps the app Services.
type Controller struct {
	cs         kubernetes.Interface
	log        *slog.Logger
	factory    informers.SharedInformerFactory
	svcFactory informers.SharedInformerFactory
	pods       corelisters.PodLister
	services   corelisters.ServiceLister
	synced     []cache.InformerSynced
	queue      workqueue.TypedRateLimitingInterface[key]
}

// key is one app in one namespace.
type key struct{ ns, app string }

// New prepares a controller; Run starts it.
func New(cs kubernetes.Interface, o Options) (*Controller, error) {
	if cs == nil {
		return nil, errors.New("appservices: no Kubernetes client")
	}
	if o.Resync == 0 {
		o.Resync = 10 * time.Minute
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	c := &Controller{cs: cs, log: o.Logger,
		queue: workqueue.NewTypedRateLimitingQueueWithConfig(workqueue.DefaultTypedControllerRateLimiter[key](),
			workqueue.TypedRateLimitingQueueConfig[key]{Name: "appservices"})}
	// Only meshd pods and managed Services are watched and cached.
	pods := informers.NewSharedInformerFactoryWithOptions(cs, o.Resync, informers.WithNamespace(o.Namespace),
		informers.WithTweakListOptions(func(lo *metav1.ListOptions) { lo.LabelSelector = LabelAppID }))
	svcs := informers.NewSharedInformerFactoryWithOptions(cs, o.Resync, informers.WithNamespace(o.Namespace),
		informers.WithTweakListOptions(func(lo *metav1.ListOptions) { lo.LabelSelector = LabelManagedBy + "=" + ManagedBy }))
	pi, si := pods.Core().V1().Pods(), svcs.Core().V1().Services()
	c.pods, c.services = pi.Lister(), si.Lister()
	onPod := cache.ResourceEventHandlerFuncs{
		AddFunc:    func(o any) { c.enqueuePod(o) },
		UpdateFunc: func(old, o any) { c.enqueuePod(old); c.enqueuePod(o) },
		DeleteFunc: func(o any) { c.enqueuePod(o) },
	}
	onSvc := cache.ResourceEventHandlerFuncs{
		AddFunc:    func(o any) { c.enqueueService(o) },
		UpdateFunc: func(_, o any) { c.enqueueService(o) },
		DeleteFunc: func(o any) { c.enqueueService(o) },
	}
	if _, err := pi.Informer().AddEventHandler(onPod); err != nil {
		return nil, fmt.Errorf("appservices: %w", err)
	}
	if _, err := si.Informer().AddEventHandler(onSvc); err != nil {
		return nil, fmt.Errorf("appservices: %w", err)
	}
	c.synced = []cache.InformerSynced{pi.Informer().HasSynced, si.Informer().HasSynced}
	c.factory = pods
	c.svcFactory = svcs
	return c, nil
}

func objectOf(o any) metav1.Object {
	if t, ok := o.(cache.DeletedFinalStateUnknown); ok {
		o = t.Obj
	}
	m, _ := o.(metav1.Object)
	return m
}

func (c *Controller) enqueuePod(o any) {
	if m := objectOf(o); m != nil && m.GetLabels()[LabelAppID] != "" {
		c.queue.Add(key{m.GetNamespace(), m.GetLabels()[LabelAppID]})
	}
}

func (c *Controller) enqueueService(o any) {
	if m := objectOf(o); m != nil && m.GetLabels()[LabelAppID] != "" {
		c.queue.Add(key{m.GetNamespace(), m.GetLabels()[LabelAppID]})
	}
}

// Run watches and reconciles until ctx ends.
func (c *Controller) Run(ctx context.Context) error {
	defer c.queue.ShutDown()
	c.factory.Start(ctx.Done())
	c.svcFactory.Start(ctx.Done())
	defer c.factory.Shutdown()
	defer c.svcFactory.Shutdown()
	if !cache.WaitForCacheSync(ctx.Done(), c.synced...) {
		if ctx.Err() != nil {
			return nil
		}
		return errors.New("appservices: the pod and service caches did not sync")
	}
	c.log.Info("appservices: controller started")
	go func() {
		<-ctx.Done()
		c.queue.ShutDown()
	}()
	for c.next(ctx) {
	}
	return nil
}

func (c *Controller) next(ctx context.Context) bool {
	k, quit := c.queue.Get()
	if quit {
		return false
	}
	defer c.queue.Done(k)
	if err := c.reconcile(ctx, k); err != nil {
		c.log.Warn("appservices: reconcile failed; retrying", "namespace", k.ns, "app_id", k.app, "err", err)
		c.queue.AddRateLimited(k)
		return true
	}
	c.queue.Forget(k)
	return true
}

// live reports whether a pod still counts for its app's Service.
func live(p *corev1.Pod) bool {
	return p.DeletionTimestamp == nil && p.Status.Phase != corev1.PodSucceeded && p.Status.Phase != corev1.PodFailed
}

func (c *Controller) reconcile(ctx context.Context, k key) error {
	sel := labels.SelectorFromSet(labels.Set{LabelAppID: k.app})
	all, err := c.pods.Pods(k.ns).List(sel)
	if err != nil {
		return fmt.Errorf("appservices: %w", err)
	}
	var pods []*corev1.Pod
	for _, p := range all {
		if live(p) {
			pods = append(pods, p)
		}
	}
	name := ServiceName(k.app)
	svcs := c.cs.CoreV1().Services(k.ns)
	cur, err := c.services.Services(k.ns).Get(name)
	if err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("appservices: %w", err)
	}
	if len(pods) == 0 {
		if cur == nil {
			return nil
		}
		err := svcs.Delete(ctx, name, metav1.DeleteOptions{Preconditions: &metav1.Preconditions{UID: &cur.UID}})
		if err != nil && !apierrors.IsNotFound(err) && !apierrors.IsConflict(err) {
			return fmt.Errorf("appservices: delete %s/%s: %w", k.ns, name, err)
		}
		c.log.Info("appservices: service removed with the app's last pod", "namespace", k.ns, "service", name)
		return nil
	}
	want := desired(k, pods)
	if cur == nil {
		_, err := svcs.Create(ctx, want, metav1.CreateOptions{})
		if apierrors.IsAlreadyExists(err) {
			// Not in the managed cache: someone else's Service.
			existing, gerr := svcs.Get(ctx, name, metav1.GetOptions{})
			if gerr == nil && existing.Labels[LabelManagedBy] != ManagedBy {
				c.log.Warn("appservices: a Service of this name exists and was not made by meshd; left alone",
					"namespace", k.ns, "service", name, "app_id", k.app)
				return nil
			}
			return fmt.Errorf("appservices: create %s/%s: %w", k.ns, name, err)
		}
		if err != nil {
			return fmt.Errorf("appservices: create %s/%s: %w", k.ns, name, err)
		}
		c.log.Info("appservices: service created", "namespace", k.ns, "service", name, "pods", len(pods))
		return nil
	}
	if same(cur, want) {
		return nil
	}
	upd := cur.DeepCopy()
	upd.Labels = mergeLabels(upd.Labels, want.Labels)
	upd.OwnerReferences = want.OwnerReferences
	upd.Spec.Selector = want.Spec.Selector
	upd.Spec.Ports = want.Spec.Ports
	upd.Spec.PublishNotReadyAddresses = false
	if _, err := svcs.Update(ctx, upd, metav1.UpdateOptions{}); err != nil {
		return fmt.Errorf("appservices: update %s/%s: %w", k.ns, name, err)
	}
	return nil
}

func desired(k key, pods []*corev1.Pod) *corev1.Service {
	slices.SortFunc(pods, func(a, b *corev1.Pod) int { return strings.Compare(a.Name, b.Name) })
	refs := make([]metav1.OwnerReference, 0, len(pods))
	for _, p := range pods {
		refs = append(refs, metav1.OwnerReference{APIVersion: "v1", Kind: "Pod", Name: p.Name, UID: p.UID})
	}
	return &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: ServiceName(k.app), Namespace: k.ns,
			Labels:          map[string]string{LabelAppID: k.app, LabelManagedBy: ManagedBy},
			OwnerReferences: refs},
		Spec: corev1.ServiceSpec{
			ClusterIP: corev1.ClusterIPNone,
			Selector:  map[string]string{LabelAppID: k.app},
			Ports: []corev1.ServicePort{{Name: PortName, Port: Port, TargetPort: intstr.FromString(PortName),
				Protocol: corev1.ProtocolTCP}},
		},
	}
}

func mergeLabels(have, want map[string]string) map[string]string {
	out := make(map[string]string, len(have)+len(want))
	for k, v := range have {
		out[k] = v
	}
	for k, v := range want {
		out[k] = v
	}
	return out
}

func same(cur, want *corev1.Service) bool {
	for k, v := range want.Labels {
		if cur.Labels[k] != v {
			return false
		}
	}
	if len(cur.OwnerReferences) != len(want.OwnerReferences) || cur.Spec.PublishNotReadyAddresses ||
		len(cur.Spec.Selector) != 1 || cur.Spec.Selector[LabelAppID] != want.Spec.Selector[LabelAppID] ||
		len(cur.Spec.Ports) != 1 {
		return false
	}
	for i, r := range cur.OwnerReferences {
		w := want.OwnerReferences[i]
		if r.UID != w.UID || r.Name != w.Name || r.Kind != w.Kind {
			return false
		}
	}
	p, w := cur.Spec.Ports[0], want.Spec.Ports[0]
	return p.Name == w.Name && p.Port == w.Port && p.TargetPort == w.TargetPort && p.Protocol == w.Protocol
}
