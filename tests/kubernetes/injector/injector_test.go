// Package injector_test proves the sidecar injector (package
// kube/injector) against a real kube-apiserver v1.37.2
// (tests/harness.StartKube): the webhook is registered with the API
// server, served over TLS on loopback with a certificate sentry issued
// (sentry --server-name), trusted through caBundle = sentry's bundle;
// pods are created through the API and read back.
package injector_test

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/meshd/meshd/kube/injector"
	"github.com/meshd/meshd/tests/harness"
)

const (
	shop   = "shop"
	optout = "optout"
	system = "meshd-system"
)

type env struct {
	t      *testing.T
	cs     kubernetes.Interface
	stop   context.CancelFunc
	served chan error
}

// startInjector starts kube-apiserver, sentry, the injector (in this
// process, with sentry's certificate for meshd-system/controlplane, which
// carries 127.0.0.1) and registers the webhook.
func startInjector(t *testing.T, cfg injector.Config) *env {
	t.Helper()
	k := harness.StartKube(t)
	b := harness.Build(t)
	s := harness.StartSentry(t, b, "", "--server-name", system+"/controlplane=127.0.0.1,meshd-controlplane.meshd-system.svc")
	src := s.Source(t, "controlplane", system)
	in, err := injector.New(cfg, slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})))
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	e := &env{t: t, cs: k.Client(), stop: cancel, served: make(chan error, 1)}
	go func() { e.served <- injector.Serve(ctx, l, src, in) }()
	t.Cleanup(func() {
		cancel()
		if err := <-e.served; err != nil {
			t.Errorf("injector.Serve: %v", err)
		}
	})
	bundle, err := os.ReadFile(s.BundleFile())
	if err != nil {
		t.Fatal(err)
	}
	bg := context.Background()
	for _, ns := range []*corev1.Namespace{
		// The restricted Pod Security Standard: the injected sidecar passes it.
		{ObjectMeta: metav1.ObjectMeta{Name: shop, Labels: map[string]string{"pod-security.kubernetes.io/enforce": "restricted"}}},
		{ObjectMeta: metav1.ObjectMeta{Name: optout, Labels: map[string]string{injector.NamespaceOptOutLabel: "disabled"}}},
		{ObjectMeta: metav1.ObjectMeta{Name: system}},
	} {
		if _, err := e.cs.CoreV1().Namespaces().Create(bg, ns, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	wh := injector.WebhookConfiguration(injector.Webhook{
		Name: "meshd-injector", URL: "https://127.0.0.1:" + strconv.Itoa(l.Addr().(*net.TCPAddr).Port) + injector.Path,
		ExcludeNamespaces: []string{system},
	})
	// As the chart installs it: no caBundle; the control plane writes
	// sentry's bundle into it.
	if _, err := e.cs.AdmissionregistrationV1().MutatingWebhookConfigurations().Create(bg, wh, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := injector.PatchCABundle(bg, e.cs, wh.Name, bundle); err != nil {
		t.Fatal(err)
	}
	if err := injector.PatchCABundle(bg, e.cs, wh.Name, bundle); err != nil { // unchanged: no write
		t.Fatal(err)
	}
	if err := injector.PatchCABundle(bg, e.cs, "no-such-webhook", bundle); err == nil || !strings.Contains(err.Error(), "no-such-webhook") {
		t.Errorf("a missing webhook configuration: %v", err)
	}
	// The API server picks the configuration up from its informer.
	n := 0
	harness.WaitFor(t, 30*time.Second, func(ctx context.Context) error {
		n++
		p := e.create(shop, "probe-"+strconv.Itoa(n), meshdAnn("probe"))
		defer e.cs.CoreV1().Pods(shop).Delete(ctx, p.Name, metav1.DeleteOptions{})
		if !injector.Injected(p) {
			return errNotYet
		}
		return nil
	})
	return e
}

var errNotYet = errors.New("the API server does not call the webhook yet")

func meshdAnn(app string) map[string]string {
	return map[string]string{injector.AnnotationInject: "true", injector.AnnotationAppID: app, injector.AnnotationAppPort: "8080"}
}

// restrictedApp is an app container that passes the restricted profile.
func restrictedApp() corev1.Container {
	no, yes := false, true
	return corev1.Container{Name: "app", Image: "example.com/app:1",
		SecurityContext: &corev1.SecurityContext{
			AllowPrivilegeEscalation: &no, RunAsNonRoot: &yes,
			Capabilities:   &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
			SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
		}}
}

func pod(ns, name string, ann map[string]string) *corev1.Pod {
	return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Annotations: ann},
		Spec: corev1.PodSpec{ServiceAccountName: "default", Containers: []corev1.Container{restrictedApp()}}}
}

// create creates the pod and reads it back from the API server.
func (e *env) create(ns, name string, ann map[string]string) *corev1.Pod {
	e.t.Helper()
	return e.createPod(pod(ns, name, ann))
}

func (e *env) createPod(p *corev1.Pod) *corev1.Pod {
	e.t.Helper()
	ctx := context.Background()
	if _, err := e.cs.CoreV1().Pods(p.Namespace).Create(ctx, p, metav1.CreateOptions{}); err != nil {
		e.t.Fatalf("create pod %s/%s: %v", p.Namespace, p.Name, err)
	}
	got, err := e.cs.CoreV1().Pods(p.Namespace).Get(ctx, p.Name, metav1.GetOptions{})
	if err != nil {
		e.t.Fatal(err)
	}
	return got
}

func (e *env) refused(ns, name string, ann map[string]string) error {
	e.t.Helper()
	_, err := e.cs.CoreV1().Pods(ns).Create(context.Background(), pod(ns, name, ann), metav1.CreateOptions{})
	if err == nil {
		e.t.Fatalf("pod %s/%s with %v was created; want it refused", ns, name, ann)
	}
	return err
}

func sidecarOf(t *testing.T, p *corev1.Pod) corev1.Container {
	t.Helper()
	if len(p.Spec.InitContainers) == 0 || p.Spec.InitContainers[0].Name != injector.ContainerName {
		t.Fatalf("pod %s: want meshd as the first init container, have %v", p.Name, names(p.Spec.InitContainers))
	}
	n := 0
	for _, c := range p.Spec.InitContainers {
		if c.Name == injector.ContainerName {
			n++
		}
	}
	if n != 1 {
		t.Fatalf("pod %s: %d meshd containers", p.Name, n)
	}
	return p.Spec.InitContainers[0]
}

func names(cs []corev1.Container) []string {
	var out []string
	for _, c := range cs {
		out = append(out, c.Name)
	}
	return out
}

// arg returns the value after flag in args ("" and false if absent).
func arg(args []string, flag string) (string, bool) {
	i := slices.Index(args, flag)
	if i < 0 {
		return "", false
	}
	if i+1 < len(args) && !strings.HasPrefix(args[i+1], "--") {
		return args[i+1], true
	}
	return "", true
}

func envOf(c corev1.Container) map[string]string {
	m := map[string]string{}
	for _, e := range c.Env {
		m[e.Name] = e.Value
	}
	return m
}

func wantArgs(t *testing.T, args []string, want map[string]string) {
	t.Helper()
	for f, v := range want {
		got, ok := arg(args, f)
		if !ok || got != v {
			t.Errorf("sidecar flag %s = %q (present %v), want %q; args %q", f, got, ok, v, args)
		}
	}
}

func TestInjectorWithRealAPIServer(t *testing.T) {
	cfg := injector.Config{
		Image: "registry.example/meshd:v9", SentryAddress: "meshd-sentry.meshd-system.svc:50003",
		TrustDomain: "prod.example", LogFormat: "json", PolicyConfigMap: "meshd-policy", PolicyDefault: "deny", ExtraArgs: []string{"--max-request-header-fields", "80"}, Version: "v9",
	}
	e := startInjector(t, cfg)

	t.Run("meshd annotations", func(t *testing.T) {
		ann := meshdAnn("orders")
		ann[injector.AnnotationAppProtocol] = "h2c"
		ann[injector.AnnotationAppHealthCheck] = "true"
		ann[injector.AnnotationAppHealthPath] = "/ready"
		ann[injector.AnnotationAppHealthPeriod] = "2s"
		ann[injector.AnnotationAppHealthTime] = "300ms"
		ann[injector.AnnotationAppHealthThresh] = "4"
		ann[injector.AnnotationLogLevel] = "debug"
		p := e.create(shop, "orders-1", ann)
		c := sidecarOf(t, p)
		checkSidecar(t, p, c, cfg)
		wantArgs(t, c.Args, map[string]string{
			"--app-id": "orders", "--app-port": "8080", "--app-protocol": "h2c",
			"--enable-app-health-check": "", "--app-health-check-path": "/ready",
			"--app-health-probe-interval": "2s", "--app-health-probe-timeout": "300ms", "--app-health-threshold": "4",
			"--log-level": "debug", "--log-format": "json", "--trust-domain": "prod.example",
			"--max-request-header-fields": "80",
		})
		app := envOf(p.Spec.Containers[0])
		if app["DAPR_HTTP_PORT"] != "3500" || app["DAPR_GRPC_PORT"] != "50001" {
			t.Errorf("app env %v: want DAPR_HTTP_PORT=3500 DAPR_GRPC_PORT=50001", app)
		}
		if _, ok := app["HTTP_PROXY"]; ok {
			t.Errorf("app env %v: HTTP_PROXY set though the pod did not ask for transparent calls", app)
		}
		if p.Labels[injector.LabelAppID] != "orders" {
			t.Errorf("label %s = %q, want orders (the app Services select by it)", injector.LabelAppID, p.Labels[injector.LabelAppID])
		}
		if p.Annotations[injector.AnnotationStatus] != "v9" {
			t.Errorf("annotation %s = %q, want v9", injector.AnnotationStatus, p.Annotations[injector.AnnotationStatus])
		}
	})

	t.Run("Dapr annotations", func(t *testing.T) {
		p := e.create(shop, "dapr-1", map[string]string{
			"dapr.io/enabled": "true", "dapr.io/app-id": "checkout", "dapr.io/app-port": "50051",
			"dapr.io/app-protocol": "grpc", "dapr.io/enable-app-health-check": "true",
			"dapr.io/app-health-check-path": "/health", "dapr.io/app-health-probe-interval": "3",
			"dapr.io/app-health-probe-timeout": "250", "dapr.io/app-health-threshold": "2",
		})
		c := sidecarOf(t, p)
		checkSidecar(t, p, c, cfg)
		wantArgs(t, c.Args, map[string]string{
			"--app-id": "checkout", "--app-port": "50051", "--app-protocol": "grpc",
			"--app-health-check-path": "/health", "--app-health-probe-interval": "3s",
			"--app-health-probe-timeout": "250ms", "--app-health-threshold": "2",
		})
	})

	t.Run("transparent calls and the app's own env", func(t *testing.T) {
		ann := meshdAnn("web")
		ann[injector.AnnotationTransparent] = "true"
		p := pod(shop, "web-1", ann)
		p.Spec.Containers[0].Env = []corev1.EnvVar{{Name: "DAPR_HTTP_PORT", Value: "9999"}}
		second := restrictedApp()
		second.Name = "helper"
		p.Spec.Containers = append(p.Spec.Containers, second)
		got := e.createPod(p)
		sidecarOf(t, got)
		if env := envOf(got.Spec.Containers[0]); env["DAPR_HTTP_PORT"] != "9999" || env["HTTP_PROXY"] != "http://127.0.0.1:3500" {
			t.Errorf("app env %v: want its own DAPR_HTTP_PORT=9999 kept and HTTP_PROXY=http://127.0.0.1:3500", env)
		}
		if env := envOf(got.Spec.Containers[1]); env["DAPR_HTTP_PORT"] != "3500" || env["HTTP_PROXY"] == "" {
			t.Errorf("second container env %v: want the injected variables too", env)
		}
	})

	t.Run("no annotations", func(t *testing.T) {
		p := e.create(shop, "plain-1", nil)
		if len(p.Spec.InitContainers) != 0 || len(p.Spec.Containers[0].Env) != 0 || len(p.Spec.Volumes) != 0 {
			t.Errorf("a pod without annotations was changed: init %v env %v volumes %d",
				names(p.Spec.InitContainers), p.Spec.Containers[0].Env, len(p.Spec.Volumes))
		}
		// Annotations without the opt-in are not checked.
		p = e.create(shop, "plain-2", map[string]string{injector.AnnotationAppID: "Not_A_Label", injector.AnnotationAppPort: "0"})
		if injector.Injected(p) {
			t.Error("a pod that did not opt in was injected")
		}
	})

	t.Run("pod opt-out", func(t *testing.T) {
		ann := map[string]string{"dapr.io/enabled": "true", "dapr.io/app-id": "x", injector.AnnotationInject: "false"}
		if p := e.create(shop, "optout-1", ann); injector.Injected(p) {
			t.Error("meshd.io/inject=false did not keep the injector away")
		}
	})

	t.Run("namespace opt-out", func(t *testing.T) {
		if p := e.create(optout, "orders-1", meshdAnn("orders")); injector.Injected(p) {
			t.Errorf("a pod in a namespace labelled %s=disabled was injected", injector.NamespaceOptOutLabel)
		}
		if p := e.create(system, "orders-1", meshdAnn("orders")); injector.Injected(p) {
			t.Error("a pod in meshd's own namespace was injected")
		}
	})

	t.Run("idempotent", func(t *testing.T) {
		first := e.create(shop, "twice-1", meshdAnn("twice"))
		again := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: shop, Name: "twice-2", Annotations: first.Annotations}, Spec: first.Spec}
		again.Spec.NodeName = ""
		got := e.createPod(again)
		sidecarOf(t, got)
		a, _ := json.Marshal(first.Spec.InitContainers)
		b, _ := json.Marshal(got.Spec.InitContainers)
		if string(a) != string(b) || len(got.Spec.Volumes) != len(first.Spec.Volumes) ||
			len(got.Spec.Containers[0].Env) != len(first.Spec.Containers[0].Env) {
			t.Errorf("a pod injected twice changed:\nfirst  %s\nsecond %s", a, b)
		}
	})

	t.Run("bad annotations", func(t *testing.T) {
		for i, c := range []struct {
			ann  map[string]string
			name string // the annotation the message must name
		}{
			{map[string]string{injector.AnnotationInject: "yes please", injector.AnnotationAppID: "a"}, injector.AnnotationInject},
			{map[string]string{"dapr.io/enabled": "sure", "dapr.io/app-id": "a"}, "dapr.io/enabled"},
			{map[string]string{injector.AnnotationInject: "true"}, injector.AnnotationAppID},
			{map[string]string{injector.AnnotationInject: "true", injector.AnnotationAppID: "Orders"}, injector.AnnotationAppID},
			{map[string]string{injector.AnnotationInject: "true", injector.AnnotationAppID: "orders.v1"}, injector.AnnotationAppID},
			{map[string]string{"dapr.io/enabled": "true", "dapr.io/app-id": "-x"}, "dapr.io/app-id"},
			{map[string]string{injector.AnnotationInject: "true", injector.AnnotationAppID: strings.Repeat("a", 64)}, injector.AnnotationAppID},
			{map[string]string{injector.AnnotationInject: "true", injector.AnnotationAppID: "a", injector.AnnotationAppPort: "70000"}, injector.AnnotationAppPort},
			{map[string]string{injector.AnnotationInject: "true", injector.AnnotationAppID: "a", injector.AnnotationAppPort: "0"}, injector.AnnotationAppPort},
			{map[string]string{"dapr.io/enabled": "true", "dapr.io/app-id": "a", "dapr.io/app-port": "http"}, "dapr.io/app-port"},
			{map[string]string{injector.AnnotationInject: "true", injector.AnnotationAppID: "a", injector.AnnotationAppProtocol: "websocket"}, injector.AnnotationAppProtocol},
			{map[string]string{"dapr.io/enabled": "true", "dapr.io/app-id": "a", "dapr.io/app-protocol": "thrift"}, "dapr.io/app-protocol"},
			{map[string]string{injector.AnnotationInject: "true", injector.AnnotationAppID: "a", "dapr.io/app-id": "b"}, "dapr.io/app-id"},
			{map[string]string{injector.AnnotationInject: "true", injector.AnnotationAppID: "a", injector.AnnotationAppHealthCheck: "maybe"}, injector.AnnotationAppHealthCheck},
			{map[string]string{injector.AnnotationInject: "true", injector.AnnotationAppID: "a", injector.AnnotationAppHealthPath: "health"}, injector.AnnotationAppHealthPath},
			{map[string]string{"dapr.io/enabled": "true", "dapr.io/app-id": "a", "dapr.io/app-health-probe-interval": "0"}, "dapr.io/app-health-probe-interval"},
			{map[string]string{injector.AnnotationInject: "true", injector.AnnotationAppID: "a", injector.AnnotationAppHealthTime: "soon"}, injector.AnnotationAppHealthTime},
			{map[string]string{injector.AnnotationInject: "true", injector.AnnotationAppID: "a", injector.AnnotationAppHealthTime: "2h"}, injector.AnnotationAppHealthTime},
			{map[string]string{injector.AnnotationInject: "true", injector.AnnotationAppID: "a", injector.AnnotationAppHealthThresh: "-1"}, injector.AnnotationAppHealthThresh},
			{map[string]string{injector.AnnotationInject: "true", injector.AnnotationAppID: "a", injector.AnnotationLogLevel: "loud"}, injector.AnnotationLogLevel},
			{map[string]string{injector.AnnotationInject: "true", injector.AnnotationAppID: "a", injector.AnnotationTransparent: "on"}, injector.AnnotationTransparent},
		} {
			err := e.refused(shop, "bad-"+strconv.Itoa(i), c.ann)
			msg := err.Error()
			if !strings.Contains(msg, "inject.meshd.io") || !strings.Contains(msg, c.name) {
				t.Errorf("case %d %v: refusal %q does not name the webhook and the annotation %s", i, c.ann, msg, c.name)
			}
		}
	})

	// Last: with the injector down, failurePolicy Fail refuses a pod that
	// asks for the mesh; pods in excluded namespaces are still created.
	t.Run("injector down", func(t *testing.T) {
		e.stop()
		if err := <-e.served; err != nil {
			t.Fatal(err)
		}
		e.served <- nil
		err := e.refused(shop, "down-1", meshdAnn("orders"))
		if !strings.Contains(err.Error(), "inject.meshd.io") {
			t.Errorf("refusal %q does not name the webhook", err)
		}
		e.create(system, "down-2", meshdAnn("orders"))
		e.create(optout, "down-3", meshdAnn("orders"))
	})
}

// checkSidecar checks every field the injector promises.
func checkSidecar(t *testing.T, p *corev1.Pod, c corev1.Container, cfg injector.Config) {
	t.Helper()
	if c.RestartPolicy == nil || *c.RestartPolicy != corev1.ContainerRestartPolicyAlways {
		t.Errorf("sidecar restartPolicy %v, want Always (a native sidecar)", c.RestartPolicy)
	}
	if c.Image != cfg.Image {
		t.Errorf("sidecar image %q, want %q", c.Image, cfg.Image)
	}
	wantArgs(t, c.Args, map[string]string{
		"--sentry-address": cfg.SentryAddress, "--trust-anchors-file": injector.BundlePath,
		"--token-file": injector.TokenPath, "--resolver": "kubernetes", "--public-port": "3501",
	})
	for _, pr := range []*corev1.Probe{c.StartupProbe, c.ReadinessProbe, c.LivenessProbe} {
		if pr == nil || pr.HTTPGet == nil || pr.HTTPGet.Path != "/v1.0/healthz" || pr.HTTPGet.Port.String() != "meshd-public" {
			t.Errorf("sidecar probe %+v: want GET /v1.0/healthz on meshd-public", pr)
		}
	}
	ports := map[string]int32{}
	for _, cp := range c.Ports {
		ports[cp.Name] = cp.ContainerPort
	}
	if ports[injector.InternalPortName] != 50002 || ports["meshd-public"] != 3501 {
		t.Errorf("sidecar ports %v: want meshd-internal 50002, meshd-public 3501", ports)
	}
	if c.Resources.Requests.Cpu().IsZero() || c.Resources.Requests.Memory().IsZero() {
		t.Errorf("sidecar resource requests %v: want cpu and memory", c.Resources.Requests)
	}
	sc := c.SecurityContext
	if sc == nil || sc.RunAsNonRoot == nil || !*sc.RunAsNonRoot || sc.RunAsUser == nil || *sc.RunAsUser == 0 ||
		sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem ||
		sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation ||
		sc.Capabilities == nil || !slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) {
		t.Errorf("sidecar securityContext %+v: want non-root, read-only root, no escalation, no capabilities", sc)
	}
	env := map[string]*corev1.EnvVarSource{}
	for _, e := range c.Env {
		env[e.Name] = e.ValueFrom
	}
	if env["NAMESPACE"] == nil || env["NAMESPACE"].FieldRef == nil || env["NAMESPACE"].FieldRef.FieldPath != "metadata.namespace" {
		t.Errorf("sidecar env NAMESPACE: want the pod's namespace (downward API), have %+v", env["NAMESPACE"])
	}
	mounts := map[string]corev1.VolumeMount{}
	for _, m := range c.VolumeMounts {
		mounts[m.Name] = m
	}
	vols := map[string]corev1.Volume{}
	for _, v := range p.Spec.Volumes {
		vols[v.Name] = v
	}
	tok := vols[injector.TokenVolume]
	if tok.Projected == nil || len(tok.Projected.Sources) != 1 || tok.Projected.Sources[0].ServiceAccountToken == nil ||
		tok.Projected.Sources[0].ServiceAccountToken.Audience != "meshd" {
		t.Errorf("token volume %+v: want a projected service-account token with audience meshd", tok)
	}
	if m := mounts[injector.TokenVolume]; m.MountPath != "/var/run/secrets/meshd.io/token" || !m.ReadOnly {
		t.Errorf("token mount %+v", m)
	}
	bundle := vols[injector.BundleVolume]
	if bundle.ConfigMap == nil || bundle.ConfigMap.Name != "meshd-trust-bundle" {
		t.Errorf("bundle volume %+v: want ConfigMap meshd-trust-bundle", bundle)
	}
	if m := mounts[injector.BundleVolume]; m.MountPath != "/var/run/secrets/meshd.io/trust" || !m.ReadOnly {
		t.Errorf("bundle mount %+v", m)
	}
	// Without a control plane: the namespace's policy ConfigMap, optional.
	pol := vols[injector.PolicyVolume]
	if pol.ConfigMap == nil || pol.ConfigMap.Name != "meshd-policy" || pol.ConfigMap.Optional == nil || !*pol.ConfigMap.Optional {
		t.Errorf("policy volume %+v: want the optional ConfigMap meshd-policy", pol)
	}
	if m := mounts[injector.PolicyVolume]; m.MountPath != "/var/run/meshd/policy/"+p.Namespace || !m.ReadOnly {
		t.Errorf("policy mount %+v: want /var/run/meshd/policy/%s", m, p.Namespace)
	}
	wantArgs(t, c.Args, map[string]string{"--policy-dir": "/var/run/meshd/policy", "--policy-default": "deny"})
}
