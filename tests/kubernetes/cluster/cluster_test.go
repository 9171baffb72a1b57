// Package cluster_test is the closest to a real cluster these machines
// allow: a real kube-apiserver, etcd and kube-controller-manager v1.37.2;
// the Helm chart rendered and applied; sentry started with the chart's own
// arguments on its Secret-backed CA, validating tokens with TokenReview
// under the chart's RBAC; the injector and the app Services controller as
// the control plane runs them, under the control plane's service account;
// and every pod in its own network namespace ("pod IP" on a veth to the
// node), where its app and its meshd run with exactly the arguments, env
// and volumes (token, trust bundle, in-cluster service account) the
// injector wrote into the stored Pod, mounted at the same paths in a
// private mount namespace. Calls go app → sidecar → mTLS → sidecar → app,
// found through EndpointSlices; a deleted pod stops being picked while it
// still runs.
//
// What is not the real thing: no kubelet (the test starts the containers'
// processes and writes pod status after the injected readiness probe
// answers), no cluster DNS (a hosts file in each pod's mount namespace names
// sentry's Service address), the API server reaches the webhook by URL on
// loopback or at the control plane's pod IP (sentry adds both to the
// control plane's names), no kube-proxy (a Service name is its one pod's
// IP), and in TestCluster the control plane's parts run in the test
// process (TestClusterXDS runs cmd/controlplane as its pod).
package cluster_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/restmapper"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/meshd/meshd/certs"
	"github.com/meshd/meshd/internal/helmchart"
	"github.com/meshd/meshd/kube/appservices"
	"github.com/meshd/meshd/kube/injector"
	"github.com/meshd/meshd/sentry/sentryclient"
	"github.com/meshd/meshd/tests/harness"
	"github.com/meshd/meshd/tests/netnstest"
)

const (
	system   = "meshd-system"
	shop     = "shop"
	svcIP    = "10.0.0.1"     // the kubernetes Service IP: in the API server's certificate
	sentryIP = "10.0.0.10"    // meshd-sentry.meshd-system.svc
	cpIP     = "10.244.1.100" // the control plane's pod (TestClusterXDS)
)

func run(t *testing.T, name string, args ...string) {
	t.Helper()
	if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
}

// proxy forwards listen to target (the kubernetes Service to the API
// server), until the test ends.
func proxy(t *testing.T, listen, target string) {
	t.Helper()
	l, err := net.Listen("tcp", listen)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				u, err := net.Dial("tcp", target)
				if err != nil {
					return
				}
				defer u.Close()
				go func() { _, _ = io.Copy(u, c) }()
				_, _ = io.Copy(c, u)
			}()
		}
	}()
}

type cluster struct {
	t      *testing.T
	k      *harness.Kube
	cs     kubernetes.Interface
	bins   harness.Binaries
	objs   []*unstructured.Unstructured
	apiCA  []byte
	id     string
	nPods  int
	hostIf []string
	// hosts names the Services in every pod's /etc/hosts (no cluster DNS).
	hosts  map[string]string
	bundle []byte
	cpPod  *corev1.Pod
}

func (c *cluster) token(ns, sa string, pod *corev1.Pod, secs int64, aud ...string) string {
	c.t.Helper()
	tr := &authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{Audiences: aud, ExpirationSeconds: &secs}}
	if pod != nil {
		tr.Spec.BoundObjectRef = &authenticationv1.BoundObjectReference{Kind: "Pod", APIVersion: "v1", Name: pod.Name, UID: pod.UID}
	}
	out, err := c.cs.CoreV1().ServiceAccounts(ns).CreateToken(context.Background(), sa, tr, metav1.CreateOptions{})
	if err != nil {
		c.t.Fatalf("TokenRequest %s/%s: %v", ns, sa, err)
	}
	return out.Status.Token
}

// as is a client authenticated as service account ns/sa (real RBAC).
func (c *cluster) as(ns, sa string) (kubernetes.Interface, string) {
	c.t.Helper()
	path := filepath.Join(c.t.TempDir(), sa+".kubeconfig")
	c.k.WriteKubeconfig(path, c.token(ns, sa, nil, 3600))
	cfg, err := clientcmd.BuildConfigFromFlags("", path)
	if err != nil {
		c.t.Fatal(err)
	}
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		c.t.Fatal(err)
	}
	return cs, path
}

func (c *cluster) find(kind, name string) *unstructured.Unstructured {
	for _, o := range c.objs {
		if o.GetKind() == kind && o.GetName() == name {
			return o
		}
	}
	c.t.Fatalf("the chart renders no %s %s", kind, name)
	return nil
}

// podTemplate is the pod spec of a rendered Deployment.
func (c *cluster) podTemplate(name string) corev1.PodTemplateSpec {
	c.t.Helper()
	m, _, _ := unstructured.NestedMap(c.find("Deployment", name).Object, "spec", "template")
	b, _ := json.Marshal(m)
	var tpl corev1.PodTemplateSpec
	if err := json.Unmarshal(b, &tpl); err != nil {
		c.t.Fatal(err)
	}
	return tpl
}

func (c *cluster) apply(ctx context.Context) {
	c.t.Helper()
	cfg := c.k.RestConfig()
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		c.t.Fatal(err)
	}
	dc, err := discovery.NewDiscoveryClientForConfig(cfg)
	if err != nil {
		c.t.Fatal(err)
	}
	mapper := restmapper.NewDeferredDiscoveryRESTMapper(memory.NewMemCacheClient(dc))
	force := true
	for _, o := range c.objs {
		gvk := o.GroupVersionKind()
		m, err := mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
		if err != nil {
			c.t.Fatal(err)
		}
		var ri dynamic.ResourceInterface = dyn.Resource(m.Resource)
		if o.GetNamespace() != "" {
			ri = dyn.Resource(m.Resource).Namespace(o.GetNamespace())
		}
		b, _ := json.Marshal(o.Object)
		if _, err := ri.Patch(ctx, o.GetName(), types.ApplyPatchType, b, metav1.PatchOptions{FieldManager: "cluster-test", Force: &force}); err != nil {
			c.t.Fatalf("apply %s %s: %v", gvk.Kind, o.GetName(), err)
		}
	}
}

// pod is one running pod: its namespace, IP and processes.
type pod struct {
	name, ip, netns string
	obj             *corev1.Pod
	app, meshd      *harness.Process
}

// startPod creates the pod through the API (the injector mutates it), gives
// it a network namespace with its pod IP, and runs its app and its meshd
// with the stored Pod's arguments, env and volumes.
func (c *cluster) startPod(ctx context.Context, name, node, ip string, ann map[string]string, appPort int) *pod {
	t := c.t
	t.Helper()
	in := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: shop, Annotations: ann},
		Spec: corev1.PodSpec{NodeName: node, ServiceAccountName: "default",
			Containers: []corev1.Container{{Name: "app", Image: "example.com/echo:1"}}}}
	obj, err := c.cs.CoreV1().Pods(shop).Create(ctx, in, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if !injector.Injected(obj) {
		t.Fatalf("pod %s was not injected", name)
	}
	p := c.podNet(name, ip, obj)

	// The app: the echo app on its annotated port, inside the pod.
	p.app = harness.Start(t, name+"/app", netnstest.Exec(t, p.netns, c.bins.Echo),
		"--port", strconv.Itoa(appPort), "--name", name)

	// meshd, from the stored Pod.
	var sc corev1.Container
	for _, ct := range obj.Spec.InitContainers {
		if ct.Name == injector.ContainerName {
			sc = ct
		}
	}
	p.meshd = c.runContainer(ctx, p, sc, c.bins.Meshd)

	// The kubelet: the injected readiness probe, on the pod IP, then the
	// pod's status.
	probe := sc.ReadinessProbe.HTTPGet
	port := 0
	for _, cp := range sc.Ports {
		if cp.Name == probe.Port.String() {
			port = int(cp.ContainerPort)
		}
	}
	harness.WaitFor(t, 60*time.Second, func(ctx context.Context) error {
		if p.meshd.Exited() {
			t.Fatalf("meshd of %s exited:\n%s", name, p.meshd.Log())
		}
		return harness.PollHTTP(ctx, "http://"+ip+":"+strconv.Itoa(port)+probe.Path, http.StatusNoContent, time.Second)
	})
	c.k.SetPodReady(shop, name, ip, true)
	return p
}

// podNet gives pod obj its network namespace: eth0 with the pod IP on a
// veth to the node, which routes to it (and answers ARP for the others).
func (c *cluster) podNet(name, ip string, obj *corev1.Pod) *pod {
	t := c.t
	t.Helper()
	p := &pod{name: name, ip: ip, obj: obj}
	c.nPods++
	p.netns = fmt.Sprintf("meshd-pod-%s-%d", c.id, c.nPods)
	host, peer := fmt.Sprintf("mh%s%d", c.id, c.nPods), fmt.Sprintf("mp%s%d", c.id, c.nPods)
	run(t, "ip", "netns", "add", p.netns)
	t.Cleanup(func() {
		// Never the test process itself: a dial into the pod may have left
		// its main thread there (see netnstest.DialIn).
		netnstest.KillIn(p.netns)
		_ = exec.Command("ip", "netns", "del", p.netns).Run()
	})
	run(t, "ip", "link", "add", host, "type", "veth", "peer", "name", peer, "netns", p.netns)
	run(t, "ip", "-n", p.netns, "link", "set", peer, "name", "eth0")
	run(t, "ip", "-n", p.netns, "addr", "add", ip+"/32", "dev", "eth0")
	run(t, "ip", "-n", p.netns, "link", "set", "eth0", "up")
	run(t, "ip", "-n", p.netns, "link", "set", "lo", "up")
	// Everything on-link through eth0: the node answers ARP for its own
	// addresses and, by proxy ARP, for the other pods it routes to.
	run(t, "ip", "-n", p.netns, "route", "add", "default", "dev", "eth0")
	run(t, "ip", "link", "set", host, "up")
	run(t, "ip", "route", "add", ip+"/32", "dev", host)
	if err := os.WriteFile("/proc/sys/net/ipv4/conf/"+host+"/proxy_arp", []byte("1"), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// runContainer runs bin as container ct of pod p: in its network
// namespace, with exactly ct's arguments and env (field references
// resolved) and its volumes at their paths in a private mount namespace,
// /etc/hosts naming the Services.
func (c *cluster) runContainer(ctx context.Context, p *pod, ct corev1.Container, bin string) *harness.Process {
	t := c.t
	t.Helper()
	obj := p.obj
	files := c.volumes(ctx, obj, ct)
	env := []string{"PATH=/usr/bin:/bin", "KUBERNETES_SERVICE_HOST=" + svcIP, "KUBERNETES_SERVICE_PORT=443"}
	for _, e := range ct.Env {
		v := e.Value
		if e.ValueFrom != nil && e.ValueFrom.FieldRef != nil {
			switch e.ValueFrom.FieldRef.FieldPath {
			case "metadata.namespace":
				v = obj.Namespace
			case "metadata.name":
				v = obj.Name
			default:
				t.Fatalf("env %s: field %s", e.Name, e.ValueFrom.FieldRef.FieldPath)
			}
		} else if e.ValueFrom != nil {
			t.Fatalf("env %s: source %+v", e.Name, e.ValueFrom)
		}
		env = append(env, e.Name+"="+v)
	}
	var sh strings.Builder
	// /run a fresh tmpfs; /etc an overlay whose writes land in it (a
	// container's own /etc/meshd/... must not touch the host's).
	sh.WriteString("set -e\nmount --make-rprivate /\nmount -t tmpfs tmpfs /run\n" +
		"mkdir -p /run/.etc/upper /run/.etc/work\nmount -t overlay overlay -o lowerdir=/etc,upperdir=/run/.etc/upper,workdir=/run/.etc/work /etc\n")
	for dst, src := range files {
		if src == "" { // an emptyDir
			fmt.Fprintf(&sh, "mkdir -p %q\n", dst)
			continue
		}
		fmt.Fprintf(&sh, "mkdir -p %q\ncp %q %q\n", filepath.Dir(dst), src, dst)
	}
	hosts := "127.0.0.1 localhost\n"
	for name, ip := range c.hosts {
		hosts += ip + " " + name + "\n"
	}
	hostsFile := filepath.Join(t.TempDir(), "hosts")
	if err := os.WriteFile(hostsFile, []byte(hosts), 0o644); err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(&sh, "mount --bind %q /etc/hosts\n", hostsFile)
	fmt.Fprintf(&sh, "exec env -i %s %q \"$@\"\n", strings.Join(quoteAll(env), " "), bin)
	script := filepath.Join(t.TempDir(), p.name+"-"+ct.Name+".sh")
	wrapper := "#!/bin/sh\nexec ip netns exec " + p.netns + " unshare -m -- /bin/sh " + strconv.Quote(script+".in") + " \"$@\"\n"
	if err := os.WriteFile(script+".in", []byte(sh.String()), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(script, []byte(wrapper), 0o755); err != nil {
		t.Fatal(err)
	}
	return harness.Start(t, p.name+"/"+ct.Name, script, ct.Args...)
}

func quoteAll(ss []string) []string {
	out := make([]string, len(ss))
	for i, s := range ss {
		out[i] = strconv.Quote(s)
	}
	return out
}

// volumes makes the files of the sidecar's mounts as the kubelet would:
// the projected token (bound to the pod, its audience and lifetime), the
// trust bundle ConfigMap's key, and the in-cluster service account. It
// returns path in the pod → file on the host.
func (c *cluster) volumes(ctx context.Context, obj *corev1.Pod, sc corev1.Container) map[string]string {
	t := c.t
	t.Helper()
	dir := t.TempDir()
	out := map[string]string{}
	put := func(dst string, data []byte) {
		src := filepath.Join(dir, strconv.Itoa(len(out)))
		if err := os.WriteFile(src, data, 0o600); err != nil {
			t.Fatal(err)
		}
		out[dst] = src
	}
	vols := map[string]corev1.Volume{}
	for _, v := range obj.Spec.Volumes {
		vols[v.Name] = v
	}
	for _, m := range sc.VolumeMounts {
		v := vols[m.Name]
		switch {
		case v.Projected != nil:
			for _, s := range v.Projected.Sources {
				if st := s.ServiceAccountToken; st != nil {
					put(m.MountPath+"/"+st.Path, []byte(c.token(obj.Namespace, obj.Spec.ServiceAccountName, obj, *st.ExpirationSeconds, st.Audience)))
				}
			}
		case v.ConfigMap != nil && v.ConfigMap.Optional != nil && *v.ConfigMap.Optional:
			// The namespace's policy: none here, so an empty folder, as the
			// kubelet mounts a missing optional ConfigMap.
			if _, err := c.cs.CoreV1().ConfigMaps(obj.Namespace).Get(ctx, v.ConfigMap.Name, metav1.GetOptions{}); err == nil {
				t.Fatalf("optional ConfigMap %s exists: the test does not mount it", v.ConfigMap.Name)
			}
			put(m.MountPath+"/.empty", nil)
		case v.ConfigMap != nil:
			var cm *corev1.ConfigMap
			harness.WaitFor(t, 60*time.Second, func(ctx context.Context) error {
				var err error
				cm, err = c.cs.CoreV1().ConfigMaps(obj.Namespace).Get(ctx, v.ConfigMap.Name, metav1.GetOptions{})
				return err
			})
			for _, it := range v.ConfigMap.Items {
				put(m.MountPath+"/"+it.Path, []byte(cm.Data[it.Key]))
			}
			if len(v.ConfigMap.Items) == 0 {
				for k, d := range cm.Data {
					put(m.MountPath+"/"+k, []byte(d))
				}
			}
		case v.EmptyDir != nil:
			out[m.MountPath] = ""
		default:
			t.Fatalf("volume %s: unexpected source %+v", m.Name, v.VolumeSource)
		}
	}
	sa := "/var/run/secrets/kubernetes.io/serviceaccount/"
	put(sa+"token", []byte(c.token(obj.Namespace, obj.Spec.ServiceAccountName, obj, 3600)))
	put(sa+"ca.crt", c.apiCA)
	put(sa+"namespace", []byte(obj.Namespace))
	// /var/run is /run: the tmpfs.
	fixed := map[string]string{}
	for k, v := range out {
		fixed[strings.Replace(k, "/var/run/", "/run/", 1)] = v
	}
	return fixed
}

type answer struct {
	Name            string `json:"name"`
	CallerAppID     string `json:"callerAppId"`
	CallerNamespace string `json:"callerNamespace"`
}

// newCluster starts the API server (with the endpointslice and garbage
// collector controllers), applies the chart rendered with values, creates
// the control plane's Pod (not run yet) and runs sentry with the chart's
// arguments until it has published the trust bundle in meshd's namespace.
func newCluster(t *testing.T, values map[string]any) *cluster {
	ctx := context.Background()
	c := &cluster{t: t, k: harness.StartKube(t), bins: harness.Build(t), id: strconv.Itoa(os.Getpid() % 10000),
		hosts: map[string]string{"meshd-sentry." + system + ".svc": sentryIP}}
	c.k.StartControllerManager("endpointslice", "garbagecollector")
	c.cs = c.k.Client()
	proxy(t, svcIP+":443", "127.0.0.1:"+strconv.Itoa(c.k.Port))
	kc, err := clientcmd.LoadFromFile(c.k.Kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	for _, cl := range kc.Clusters {
		c.apiCA = cl.CertificateAuthorityData
	}
	for _, ns := range []string{system, shop} {
		if _, err := c.cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	for _, n := range []string{"node-1", "node-2"} {
		if _, err := c.cs.CoreV1().Nodes().Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: n}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := c.cs.CoreV1().ServiceAccounts(shop).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "default"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}

	// The chart, rendered and applied.
	docs, err := helmchart.Render(filepath.Join(harness.RepoRoot(), "deploy", "helm", "meshd"), helmchart.Release{Name: "meshd", Namespace: system}, values)
	if err != nil {
		t.Fatal(err)
	}
	if c.objs, err = helmchart.Objects(docs); err != nil {
		t.Fatal(err)
	}
	c.apply(ctx)

	// The control plane's pod (meshd's namespace is never injected), so
	// that sentry's TokenReview finds it; created first, so sentry's first
	// bundle publication covers its namespace.
	cpTpl := c.podTemplate("meshd-controlplane")
	c.cpPod, err = c.cs.CoreV1().Pods(system).Create(ctx, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "meshd-controlplane-0",
		Labels: cpTpl.Labels, Annotations: cpTpl.Annotations}, Spec: cpTpl.Spec}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}

	// sentry with the chart's arguments, as its service account.
	_, sentryKubeconfig := c.as(system, "meshd-sentry")
	var sentryArgs []string
	for _, a := range c.podTemplate("meshd-sentry").Spec.Containers[0].Args {
		switch {
		case strings.HasPrefix(a, "--data-dir="):
			a = "--data-dir=" + filepath.Join(t.TempDir(), "sentry")
		case strings.HasPrefix(a, "--server-name="):
			// The API server calls the webhook by URL: on loopback (the
			// in-process injector) or at the control plane's pod IP.
			a += ",127.0.0.1," + cpIP
		}
		sentryArgs = append(sentryArgs, a)
	}
	sentryArgs = append(sentryArgs, "--kubeconfig", sentryKubeconfig, "--replica-id", "meshd-sentry-0")
	sentry := harness.Start(t, "sentry", c.bins.Sentry, sentryArgs...)
	harness.WaitFor(t, 60*time.Second, func(ctx context.Context) error {
		if sentry.Exited() {
			t.Fatalf("sentry exited:\n%s", sentry.Log())
		}
		return harness.PollHTTP(ctx, "http://127.0.0.1:8080/healthz", http.StatusOK, time.Second)
	})

	harness.WaitFor(t, 60*time.Second, func(ctx context.Context) error {
		cm, err := c.cs.CoreV1().ConfigMaps(system).Get(ctx, "meshd-trust-bundle", metav1.GetOptions{})
		if err != nil {
			return err
		}
		c.bundle = []byte(cm.Data["ca.crt"])
		return nil
	})
	return c
}

// useWebhookAt points the chart's webhook at url (the API server reaches it
// by URL here, not through the Service) and waits until the API server
// injects with it: until its informer has the new configuration a pod may
// meet the old one.
func (c *cluster) useWebhookAt(ctx context.Context, url string) {
	t := c.t
	t.Helper()
	patch := fmt.Sprintf(`[{"op":"add","path":"/webhooks/0/clientConfig/url","value":%q},{"op":"remove","path":"/webhooks/0/clientConfig/service"}]`, url)
	if _, err := c.cs.AdmissionregistrationV1().MutatingWebhookConfigurations().Patch(ctx, "meshd-injector", types.JSONPatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	n := 0
	harness.WaitFor(t, 30*time.Second, func(ctx context.Context) error {
		n++
		name := "probe-" + strconv.Itoa(n)
		p, err := c.cs.CoreV1().Pods(shop).Create(ctx, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name,
			Annotations: map[string]string{"meshd.io/inject": "true", "meshd.io/app-id": "probe"}},
			Spec: corev1.PodSpec{ServiceAccountName: "default", Containers: []corev1.Container{{Name: "a", Image: "x"}}}}, metav1.CreateOptions{})
		if err != nil {
			return err
		}
		zero := int64(0)
		_ = c.cs.CoreV1().Pods(shop).Delete(ctx, name, metav1.DeleteOptions{GracePeriodSeconds: &zero})
		if !injector.Injected(p) {
			return errors.New("not injected yet")
		}
		return nil
	})
}

// caller is the frontend app's view: its sidecar on
// 127.0.0.1:$DAPR_HTTP_PORT, calling orders' method who.
func caller(frontend *pod) func() (answer, error) {
	httpPort := ""
	for _, e := range frontend.obj.Spec.Containers[0].Env {
		if e.Name == "DAPR_HTTP_PORT" {
			httpPort = e.Value
		}
	}
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DialContext: netnstest.DialIn(frontend.netns), DisableKeepAlives: true}}
	return func() (answer, error) {
		resp, err := client.Get("http://127.0.0.1:" + httpPort + "/v1.0/invoke/orders/method/who")
		if err != nil {
			return answer{}, err
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 200 {
			return answer{}, fmt.Errorf("%d %s", resp.StatusCode, b)
		}
		var a answer
		err = json.Unmarshal(b, &a)
		return a, err
	}
}

// bothAnswer waits until calls from frontend reach both orders pods, each
// seeing the caller's identity from its certificate.
func bothAnswer(t *testing.T, call func() (answer, error)) {
	t.Helper()
	seen := map[string]bool{}
	harness.WaitFor(t, 30*time.Second, func(context.Context) error {
		a, err := call()
		if err != nil {
			return err
		}
		if a.CallerAppID != "frontend" || a.CallerNamespace != shop {
			t.Fatalf("callee saw caller %s.%s, want frontend.shop (from its certificate)", a.CallerAppID, a.CallerNamespace)
		}
		seen[a.Name] = true
		if !seen["orders-1"] || !seen["orders-2"] {
			return fmt.Errorf("answered by %v, want both pods", seen)
		}
		return nil
	})
}

// deletedStopsBeingPicked deletes orders-1 (graceful: it still runs, as
// under a kubelet's grace period): callers stop picking it.
func (c *cluster) deletedStopsBeingPicked(ctx context.Context, call func() (answer, error), orders1, orders2 *pod) {
	t := c.t
	t.Helper()
	grace := int64(30)
	if err := c.cs.CoreV1().Pods(shop).Delete(ctx, orders1.name, metav1.DeleteOptions{GracePeriodSeconds: &grace}); err != nil {
		t.Fatal(err)
	}
	t0 := time.Now()
	harness.WaitFor(t, 10*time.Second, func(context.Context) error {
		for range 10 {
			if a, err := call(); err != nil || a.Name != "orders-2" {
				return fmt.Errorf("answered by %s (%v)", a.Name, err)
			}
		}
		return nil
	})
	t.Logf("orders-1 deleted -> only orders-2 answers after %s", time.Since(t0).Round(time.Millisecond))
	for range 20 {
		if a, err := call(); err != nil || a.Name != "orders-2" {
			t.Errorf("after the deletion: answered by %s (%v), want orders-2 only", a.Name, err)
		}
	}
	if orders1.meshd.Exited() || orders1.app.Exited() {
		t.Error("orders-1 stopped before the check: the test proves nothing")
	}
	if orders2.meshd.Exited() {
		t.Error("orders-2's meshd exited")
	}
}

func startNet(t *testing.T) bool {
	if !netnstest.Run(t, netnstest.Opts{}) {
		return false
	}
	run(t, "ip", "addr", "add", svcIP+"/32", "dev", "lo")
	run(t, "ip", "addr", "add", sentryIP+"/32", "dev", "lo")
	if err := os.WriteFile("/proc/sys/net/ipv4/ip_forward", []byte("1"), 0o644); err != nil {
		t.Fatal(err)
	}
	return true
}

// TestCluster: the chart's default, sidecars on resolver kubernetes (each
// watches its namespace's EndpointSlices); the control plane's injector
// and app Services controller run in the test process under the control
// plane's service account.
func TestCluster(t *testing.T) {
	if !startNet(t) {
		return
	}
	ctx := context.Background()
	c := newCluster(t, nil)
	bundle := c.bundle
	// The control plane's identity, by its projected token, and its parts.
	anchors, err := certs.ParseCertsPEM(bundle)
	if err != nil {
		t.Fatal(err)
	}
	cpID, _ := certs.NewIdentity("cluster.local", system, "controlplane")
	scl, err := sentryclient.New(ctx, "127.0.0.1:50003", anchors, cpID, c.token(system, "meshd-controlplane", c.cpPod, 3600, "meshd"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { scl.Close() })
	sctx, scancel := context.WithTimeout(ctx, 30*time.Second)
	src, err := certs.NewSource(sctx, scl, certs.SourceOptions{Identity: cpID})
	scancel()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { src.Close() })
	cpClient, _ := c.as(system, "meshd-controlplane")
	icfg := injector.Config{}
	for _, a := range c.cpPod.Spec.Containers[0].Args {
		k, v, _ := strings.Cut(a, "=")
		switch k {
		case "--sidecar-image":
			icfg.Image = v
		case "--sidecar-resolver":
			icfg.Resolver = v
		case "--sidecar-sentry-address":
			icfg.SentryAddress = v
		case "--log-format":
			icfg.LogFormat = v
		case "--log-level":
			icfg.LogLevel = v
		case "--sidecar-policy-configmap":
			icfg.PolicyConfigMap = v
		}
	}
	in, err := injector.New(icfg, slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})))
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cpCtx, cpStop := context.WithCancel(ctx)
	var wg sync.WaitGroup
	t.Cleanup(func() { cpStop(); wg.Wait() })
	wg.Add(2)
	go func() { defer wg.Done(); _ = injector.Serve(cpCtx, l, src, in) }()
	as, err := appservices.New(cpClient, appservices.Options{})
	if err != nil {
		t.Fatal(err)
	}
	go func() { defer wg.Done(); _ = as.Run(cpCtx) }()
	if err := injector.PatchCABundle(ctx, cpClient, "meshd-injector", bundle); err != nil {
		t.Fatal(err)
	}
	c.useWebhookAt(ctx, "https://127.0.0.1:"+strconv.Itoa(l.Addr().(*net.TCPAddr).Port)+injector.Path)

	// Pods on two nodes: orders (meshd annotations), frontend (Dapr's).
	orders1 := c.startPod(ctx, "orders-1", "node-1", "10.244.1.11", map[string]string{"meshd.io/inject": "true", "meshd.io/app-id": "orders", "meshd.io/app-port": "8080"}, 8080)
	orders2 := c.startPod(ctx, "orders-2", "node-2", "10.244.2.12", map[string]string{"meshd.io/inject": "true", "meshd.io/app-id": "orders", "meshd.io/app-port": "8080"}, 8080)
	frontend := c.startPod(ctx, "frontend-1", "node-1", "10.244.1.2", map[string]string{"dapr.io/enabled": "true", "dapr.io/app-id": "frontend", "dapr.io/app-port": "8080"}, 8080)

	call := caller(frontend)
	bothAnswer(t, call)
	harness.WaitFor(t, 10*time.Second, func(ctx context.Context) error {
		svc, err := c.cs.CoreV1().Services(shop).Get(ctx, appservices.ServiceName("orders"), metav1.GetOptions{})
		if err != nil {
			return err
		}
		if len(svc.OwnerReferences) != 2 {
			return fmt.Errorf("the app Service of orders has owners %+v, want both pods", svc.OwnerReferences)
		}
		return nil
	})

	c.deletedStopsBeingPicked(ctx, call, orders1, orders2)
}

// TestClusterXDS: the chart with sidecar.resolver xds. The control plane is
// cmd/controlplane run as its pod would run it (the chart's arguments, its
// projected token, the trust bundle, in-cluster configuration, its own
// pod IP): it serves the webhook, keeps the app Services, watches the
// EndpointSlices of every namespace and the policy ConfigMaps, and serves
// them over xDS. Sidecars started with exactly the injected arguments
// reach it by its Service name, call each other, and a mesh-wide rule
// written to a ConfigMap in meshd's namespace changes a decision in the
// app namespace within seconds.
func TestClusterXDS(t *testing.T) {
	if !startNet(t) {
		return
	}
	ctx := context.Background()
	c := newCluster(t, map[string]any{"sidecar": map[string]any{"resolver": "xds"}})

	// The control plane's pod.
	cp := c.podNet(c.cpPod.Name, cpIP, c.cpPod)
	ct := c.cpPod.Spec.Containers[0]
	proc := c.runContainer(ctx, cp, ct, c.bins.ControlPlane)
	webhookPort := 0
	for _, p := range ct.Ports {
		if p.Name == ct.ReadinessProbe.TCPSocket.Port.String() {
			webhookPort = int(p.ContainerPort)
		}
	}
	harness.WaitFor(t, 60*time.Second, func(ctx context.Context) error {
		if proc.Exited() {
			t.Fatalf("the control plane exited:\n%s", proc.Log())
		}
		conn, err := (&net.Dialer{Timeout: time.Second}).DialContext(ctx, "tcp", net.JoinHostPort(cpIP, strconv.Itoa(webhookPort)))
		if err != nil {
			return err
		}
		return conn.Close()
	})
	c.k.SetPodReady(system, c.cpPod.Name, cpIP, true)
	// No cluster DNS and no kube-proxy: the Service name is the pod's IP.
	c.hosts["meshd-controlplane."+system+".svc"] = cpIP
	// The control plane writes sentry's bundle into the webhook itself.
	harness.WaitFor(t, 30*time.Second, func(ctx context.Context) error {
		w, err := c.cs.AdmissionregistrationV1().MutatingWebhookConfigurations().Get(ctx, "meshd-injector", metav1.GetOptions{})
		if err != nil {
			return err
		}
		if string(w.Webhooks[0].ClientConfig.CABundle) != string(c.bundle) {
			return errors.New("the webhook's caBundle is not sentry's bundle yet")
		}
		return nil
	})
	c.useWebhookAt(ctx, "https://"+cpIP+":"+strconv.Itoa(webhookPort)+injector.Path)

	orders1 := c.startPod(ctx, "orders-1", "node-1", "10.244.1.11", map[string]string{"meshd.io/inject": "true", "meshd.io/app-id": "orders", "meshd.io/app-port": "8080"}, 8080)
	orders2 := c.startPod(ctx, "orders-2", "node-2", "10.244.2.12", map[string]string{"meshd.io/inject": "true", "meshd.io/app-id": "orders", "meshd.io/app-port": "8080"}, 8080)
	frontend := c.startPod(ctx, "frontend-1", "node-1", "10.244.1.2", map[string]string{"dapr.io/enabled": "true", "dapr.io/app-id": "frontend", "dapr.io/app-port": "8080"}, 8080)

	// What the injector told the sidecars.
	for _, ct := range frontend.obj.Spec.InitContainers {
		if ct.Name != injector.ContainerName {
			continue
		}
		args := strings.Join(ct.Args, " ")
		for _, want := range []string{"--resolver xds", "--control-plane-address meshd-controlplane." + system + ".svc:15010", "--control-plane-namespace " + system} {
			if !strings.Contains(args, want) {
				t.Errorf("injected args %q lack %q", args, want)
			}
		}
		if strings.Contains(args, "--policy-dir") {
			t.Errorf("injected args %q: a --policy-dir would hide the control plane's policies", args)
		}
	}

	call := caller(frontend)
	bothAnswer(t, call)
	for _, p := range []*pod{orders1, orders2, frontend} {
		if !strings.Contains(p.meshd.Log(), "xds: first answer from the control plane") {
			t.Errorf("%s's meshd did not log its control plane's answer:\n%s", p.name, p.meshd.Log())
		}
	}

	// A mesh-wide rule, in meshd's namespace: the callee's decision in shop
	// changes within seconds (no kubelet volume refresh involved).
	rule := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "mesh-rules", Namespace: system, Labels: map[string]string{"meshd.io/policy": "true"}},
		Data: map[string]string{"who.rego": "package mesh.authz\n\ndeny contains \"who is closed mesh-wide\" if input.request.path == \"/who\"\n"}}
	t0 := time.Now()
	if _, err := c.cs.CoreV1().ConfigMaps(system).Create(ctx, rule, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	harness.WaitFor(t, 10*time.Second, func(context.Context) error {
		_, err := call()
		if err == nil || !strings.Contains(err.Error(), "403") || !strings.Contains(err.Error(), "who is closed mesh-wide") {
			return fmt.Errorf("call: %v, want 403 by the mesh-wide rule", err)
		}
		return nil
	})
	t.Logf("_mesh rule written -> first call denied by it after %s", time.Since(t0).Round(time.Millisecond))
	t0 = time.Now()
	if err := c.cs.CoreV1().ConfigMaps(system).Delete(ctx, rule.Name, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	harness.WaitFor(t, 10*time.Second, func(context.Context) error {
		_, err := call()
		return err
	})
	t.Logf("_mesh rule deleted -> calls allowed again after %s", time.Since(t0).Round(time.Millisecond))

	// Endpoints come over xDS too: a deleted pod stops being picked.
	c.deletedStopsBeingPicked(ctx, call, orders1, orders2)
	if proc.Exited() {
		t.Errorf("the control plane exited:\n%s", proc.Log())
	}
}
