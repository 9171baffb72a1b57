// Package kubernetes_test runs meshd's Kubernetes support against a real
// control plane on loopback: etcd, kube-apiserver and
// kube-controller-manager built from source by tests/kubernetes/install.sh
// (tests/harness.StartKube). No part of the API server is faked.
package kubernetes_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/meshd/meshd/tests/harness"
)

// TestControlPlane checks the harness itself: Pods created through the API
// and patched Ready become endpoints of a headless Service's EndpointSlice,
// made by the real EndpointSlice controller; a pod that turns not ready is
// marked so in the slice. (The API server refuses loopback addresses in
// EndpointSlices: pod IPs that carry traffic in a test must live in network
// namespaces; these carry none.)
func TestControlPlane(t *testing.T) {
	k := harness.StartKube(t)
	k.StartControllerManager("endpointslice")
	cs := k.Client()
	ctx := context.Background()

	// No kubelet runs: the node is registered by hand, as the
	// EndpointSlice controller reads the node of every pod.
	node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "node-1"}}
	if _, err := cs.CoreV1().Nodes().Create(ctx, node, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "shop"}}
	if _, err := cs.CoreV1().Namespaces().Create(ctx, ns, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "orders", Namespace: "shop"},
		Spec: corev1.ServiceSpec{
			ClusterIP: corev1.ClusterIPNone,
			Selector:  map[string]string{"app": "orders"},
			Ports:     []corev1.ServicePort{{Name: "meshd", Port: 50002, TargetPort: intstr.FromInt32(50002)}},
		},
	}
	if _, err := cs.CoreV1().Services("shop").Create(ctx, svc, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	for i, ip := range []string{"10.244.0.11", "10.244.0.12"} {
		name := fmt.Sprintf("orders-%d", i)
		pod := &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "shop", Labels: map[string]string{"app": "orders"}},
			Spec:       corev1.PodSpec{NodeName: "node-1", Containers: []corev1.Container{{Name: "app", Image: "example.invalid/app"}}},
		}
		if _, err := cs.CoreV1().Pods("shop").Create(ctx, pod, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		k.SetPodReady("shop", name, ip, true)
	}

	ready := func(want map[string]bool) func(context.Context) error {
		return func(ctx context.Context) error {
			slices, err := cs.DiscoveryV1().EndpointSlices("shop").List(ctx, metav1.ListOptions{LabelSelector: discoveryv1.LabelServiceName + "=orders"})
			if err != nil {
				return err
			}
			got := map[string]bool{}
			for _, s := range slices.Items {
				for _, e := range s.Endpoints {
					got[e.Addresses[0]] = e.Conditions.Ready != nil && *e.Conditions.Ready
				}
			}
			if fmt.Sprint(got) != fmt.Sprint(want) {
				return fmt.Errorf("endpoints %v, want %v", got, want)
			}
			return nil
		}
	}
	harness.WaitFor(t, 20*time.Second, ready(map[string]bool{"10.244.0.11": true, "10.244.0.12": true}))
	k.SetPodReady("shop", "orders-1", "10.244.0.12", false)
	harness.WaitFor(t, 20*time.Second, ready(map[string]bool{"10.244.0.11": true, "10.244.0.12": false}))
}
