package discovery_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	kdisc "github.com/meshd/meshd/discovery/kubernetes"
	"github.com/meshd/meshd/tests/netnstest"
)

// TestControllerMadeSlices: the slices come from Kubernetes itself. A
// headless Service labelled with the app ID and a selector, Pods created
// through the API with their status patched Ready (pod IPs in the test's
// network namespace, where their sidecars listen): the real
// kube-controller-manager's EndpointSlice controller makes the slices
// (copying the Service's labels), and meshd routes to the pods; a pod
// patched not ready stops getting calls.
func TestControllerMadeSlices(t *testing.T) {
	if !netnstest.Run(t, netnstest.Opts{}) {
		return
	}
	ips := []string{"10.244.1.11", "10.244.1.12"}
	addPodIPs(t, append([]string{"10.244.1.2"}, ips...)...)
	m := startMesh(t, "10.244.1.2")
	m.k.StartControllerManager("endpointslice")
	cs := m.k.Client()
	ctx := context.Background()
	if _, err := cs.CoreV1().Nodes().Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "node-1"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "orders", Namespace: "shop", Labels: map[string]string{kdisc.DefaultAppIDLabel: "orders"}},
		Spec: corev1.ServiceSpec{
			ClusterIP: corev1.ClusterIPNone,
			Selector:  map[string]string{"app": "orders"},
			Ports: []corev1.ServicePort{{Name: kdisc.DefaultPortName, Port: internalPort,
				TargetPort: intstr.FromInt32(internalPort)}},
		},
	}
	if _, err := cs.CoreV1().Services("shop").Create(ctx, svc, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	var pods []*pod
	for i, ip := range ips {
		p := m.pod(t, "orders", fmt.Sprintf("orders-%d", i), ip)
		pods = append(pods, p)
		kp := &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: p.name, Namespace: "shop", Labels: map[string]string{"app": "orders"}},
			Spec:       corev1.PodSpec{NodeName: "node-1", Containers: []corev1.Container{{Name: "app", Image: "example.invalid/app"}}},
		}
		if _, err := cs.CoreV1().Pods("shop").Create(ctx, kp, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		m.k.SetPodReady("shop", p.name, ip, true)
	}
	// The controller's slice carries the Service's app-ID label.
	var slice *discoveryv1.EndpointSlice
	deadline := time.Now().Add(20 * time.Second)
	for slice == nil || len(slice.Endpoints) != 2 {
		if time.Now().After(deadline) {
			t.Fatalf("no controller-made slice with 2 endpoints: %+v", slice)
		}
		list, err := cs.DiscoveryV1().EndpointSlices("shop").List(ctx, metav1.ListOptions{LabelSelector: discoveryv1.LabelServiceName + "=orders"})
		if err != nil {
			t.Fatal(err)
		}
		if len(list.Items) > 0 {
			slice = &list.Items[0]
		}
		time.Sleep(50 * time.Millisecond)
	}
	if slice.Labels[kdisc.DefaultAppIDLabel] != "orders" || slice.Labels[discoveryv1.LabelManagedBy] != "endpointslice-controller.k8s.io" {
		t.Fatalf("slice labels %v", slice.Labels)
	}

	url := m.caller.HTTPURL() + "/v1.0/invoke/orders/method/who"
	l := startLoad(url, 2)
	defer l.end()
	start := time.Now()
	for _, p := range pods {
		l.firstAnswer(t, p.name, start, 5*time.Second)
	}
	t0 := time.Now()
	m.k.SetPodReady("shop", pods[1].name, ips[1], false)
	// The controller's own delay comes first; then the caller follows.
	deadline = time.Now().Add(10 * time.Second)
	for {
		calls := l.since(time.Now().Add(-300 * time.Millisecond))
		hit := false
		for _, c := range calls {
			hit = hit || c.name == pods[1].name
		}
		if !hit && len(calls) > 5 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s still gets calls 10s after it was patched not ready", pods[1].name)
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Logf("%s out of the caller's picker within %s of the pod patched not ready", pods[1].name, time.Since(t0).Round(time.Millisecond))
	l.end()
	l.failures(t, "controller-made slices", start)
}
