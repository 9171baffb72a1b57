// Package appservices_test proves the app Services controller (package
// kube/appservices) against a real kube-apiserver and
// kube-controller-manager v1.37.2 (its endpointslice and garbage
// collector controllers): Services made, kept and removed as pods come
// and go, EndpointSlices that the kubernetes resolver reads, and Services
// the controller did not make left alone.
package appservices_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/meshd/meshd/kube/appservices"
	"github.com/meshd/meshd/tests/harness"
)

const ns = "shop"

// now deletes a pod at once (no kubelet runs to finish a graceful delete).
var now = metav1.DeleteOptions{GracePeriodSeconds: new(int64)}

func meshdPod(name, app string) *corev1.Pod {
	return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, Labels: map[string]string{appservices.LabelAppID: app}},
		Spec: corev1.PodSpec{NodeName: "node-1", Containers: []corev1.Container{{Name: "app", Image: "example.com/app:1",
			Ports: []corev1.ContainerPort{{Name: appservices.PortName, ContainerPort: appservices.Port}}}}}}
}

func startController(t *testing.T, cs kubernetes.Interface) context.CancelFunc {
	t.Helper()
	c, err := appservices.New(cs, appservices.Options{Logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	stopped := false
	stop := func() {
		if !stopped {
			stopped = true
			cancel()
			if err := <-done; err != nil {
				t.Errorf("appservices.Run: %v", err)
			}
		}
	}
	t.Cleanup(stop)
	return stop
}

func owners(s *corev1.Service) []string {
	var out []string
	for _, r := range s.OwnerReferences {
		out = append(out, r.Kind+"/"+r.Name)
	}
	return out
}

func TestAppServicesWithRealAPIServer(t *testing.T) {
	k := harness.StartKube(t)
	k.StartControllerManager("endpointslice", "garbagecollector")
	cs := k.Client()
	ctx := context.Background()
	if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := cs.CoreV1().Nodes().Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "node-1"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	// Someone's own Service with the name the controller would use for "pay".
	theirs := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: appservices.ServiceName("pay"), Namespace: ns, Labels: map[string]string{"team": "pay"}},
		Spec: corev1.ServiceSpec{Selector: map[string]string{"app": "pay"}, Ports: []corev1.ServicePort{{Name: "http", Port: 80}}}}
	theirs, err := cs.CoreV1().Services(ns).Create(ctx, theirs, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	stop := startController(t, cs)
	svcs := cs.CoreV1().Services(ns)
	pods := cs.CoreV1().Pods(ns)
	name := appservices.ServiceName("orders")

	waitService := func(what string, f func(*corev1.Service) error) *corev1.Service {
		t.Helper()
		var got *corev1.Service
		harness.WaitFor(t, 20*time.Second, func(ctx context.Context) error {
			s, err := svcs.Get(ctx, name, metav1.GetOptions{})
			if err != nil {
				return fmt.Errorf("%s: %w", what, err)
			}
			got = s
			return f(s)
		})
		return got
	}
	waitGone := func(what string) {
		t.Helper()
		harness.WaitFor(t, 30*time.Second, func(ctx context.Context) error {
			_, err := svcs.Get(ctx, name, metav1.GetOptions{})
			if apierrors.IsNotFound(err) {
				return nil
			}
			return fmt.Errorf("%s: the service is still there (err %v)", what, err)
		})
	}

	var created []*corev1.Pod
	for _, n := range []string{"orders-a", "orders-b"} {
		p, err := pods.Create(ctx, meshdPod(n, "orders"), metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		created = append(created, p)
	}
	s := waitService("two pods", func(s *corev1.Service) error {
		if len(s.OwnerReferences) != 2 {
			return fmt.Errorf("owners %v, want both pods", owners(s))
		}
		return nil
	})
	if s.Spec.ClusterIP != corev1.ClusterIPNone || s.Spec.Selector[appservices.LabelAppID] != "orders" ||
		len(s.Spec.Ports) != 1 || s.Spec.Ports[0].Name != "meshd-internal" || s.Spec.Ports[0].Port != 50002 ||
		s.Labels[appservices.LabelAppID] != "orders" || s.Labels[appservices.LabelManagedBy] != "meshd" {
		t.Errorf("service %+v", s)
	}
	for i, r := range s.OwnerReferences {
		if r.UID != created[i].UID {
			t.Errorf("owner %d: uid %s, want pod %s's %s", i, r.UID, created[i].Name, created[i].UID)
		}
	}

	// The EndpointSlice controller makes the slices the resolver reads:
	// labelled with the app ID, port meshd-internal, the ready pod's IP.
	k.SetPodReady(ns, "orders-a", "10.1.0.7", true)
	harness.WaitFor(t, 20*time.Second, func(ctx context.Context) error {
		l, err := cs.DiscoveryV1().EndpointSlices(ns).List(ctx, metav1.ListOptions{LabelSelector: appservices.LabelAppID + "=orders"})
		if err != nil {
			return err
		}
		for _, es := range l.Items {
			for _, e := range es.Endpoints {
				if len(e.Addresses) == 1 && e.Addresses[0] == "10.1.0.7" && len(es.Ports) == 1 && *es.Ports[0].Name == "meshd-internal" &&
					*es.Ports[0].Port == 50002 && es.AddressType == discoveryv1.AddressTypeIPv4 {
					return nil
				}
			}
		}
		return errors.New("no EndpointSlice with orders-a's IP on meshd-internal 50002 yet")
	})

	// Edited by hand: set back. Deleted by hand: made again.
	s.Spec.Selector = map[string]string{"app": "other"}
	if _, err := svcs.Update(ctx, s, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitService("selector restored", func(s *corev1.Service) error {
		if s.Spec.Selector[appservices.LabelAppID] != "orders" {
			return fmt.Errorf("selector %v", s.Spec.Selector)
		}
		return nil
	})
	if err := svcs.Delete(ctx, name, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	waitService("made again", func(s *corev1.Service) error {
		if len(s.OwnerReferences) != 2 {
			return fmt.Errorf("owners %v", owners(s))
		}
		return nil
	})

	// A pod goes: the Service stays, owned by the other.
	if err := pods.Delete(ctx, "orders-a", now); err != nil {
		t.Fatal(err)
	}
	waitService("one pod left", func(s *corev1.Service) error {
		if len(s.OwnerReferences) != 1 || s.OwnerReferences[0].Name != "orders-b" {
			return fmt.Errorf("owners %v, want only orders-b", owners(s))
		}
		return nil
	})
	// The last one goes: the Service goes.
	if err := pods.Delete(ctx, "orders-b", now); err != nil {
		t.Fatal(err)
	}
	waitGone("last pod deleted")

	// A pod of "pay": the controller leaves their Service alone.
	if _, err := pods.Create(ctx, meshdPod("pay-a", "pay"), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	// A pod of another app after it, to know the controller got that far.
	if _, err := pods.Create(ctx, meshdPod("orders-c", "orders"), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitService("orders again", func(s *corev1.Service) error { return nil })
	time.Sleep(500 * time.Millisecond)
	got, err := svcs.Get(ctx, theirs.Name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if got.ResourceVersion != theirs.ResourceVersion || len(got.OwnerReferences) != 0 || got.Spec.Selector["app"] != "pay" {
		t.Errorf("a Service the controller did not make was changed: %+v", got)
	}

	// With the controller stopped, the garbage collector still removes the
	// Service with its last owner.
	stop()
	if err := pods.Delete(ctx, "orders-c", now); err != nil {
		t.Fatal(err)
	}
	waitGone("garbage collector")
	if err := pods.Delete(ctx, "pay-a", now); err != nil {
		t.Fatal(err)
	}
	time.Sleep(2 * time.Second)
	if _, err := svcs.Get(ctx, theirs.Name, metav1.GetOptions{}); err != nil {
		t.Errorf("their Service is gone after their pod went: %v", err)
	}
}

func TestServiceName(t *testing.T) {
	long := "a234567890123456789012345678901234567890123456789012345678-0123"
	for _, app := range []string{"orders", long, long[:57], long[:58]} {
		n := appservices.ServiceName(app)
		if len(n) > 63 || n[len(n)-1] == '-' {
			t.Errorf("ServiceName(%q) = %q: not a DNS label", app, n)
		}
	}
	if appservices.ServiceName(long) == appservices.ServiceName(long[:62]) {
		t.Error("two long app IDs share a Service name")
	}
}
