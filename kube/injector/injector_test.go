package injector

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
)

func newInjector(t *testing.T) *Injector {
	t.Helper()
	in, err := New(Config{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	return in
}

func review(t *testing.T, pod *corev1.Pod) []byte {
	t.Helper()
	raw, err := json.Marshal(pod)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(admissionv1.AdmissionReview{
		TypeMeta: metav1.TypeMeta{APIVersion: "admission.k8s.io/v1", Kind: "AdmissionReview"},
		Request: &admissionv1.AdmissionRequest{UID: "u1", Kind: metav1.GroupVersionKind{Version: "v1", Kind: "Pod"},
			Operation: admissionv1.Create, Namespace: "shop", Object: runtime.RawExtension{Raw: raw}},
	})
	return b
}

func post(in http.Handler, path, ctype string, body []byte) *httptest.ResponseRecorder {
	r := httptest.NewRequest(http.MethodPost, path, bytes.NewReader(body))
	r.Header.Set("Content-Type", ctype)
	w := httptest.NewRecorder()
	in.ServeHTTP(w, r)
	return w
}

func TestHandlerBadRequests(t *testing.T) {
	in := newInjector(t)
	good := review(t, &corev1.Pod{})
	for _, c := range []struct {
		name, path, ctype string
		body              []byte
		code              int
	}{
		{"wrong path", "/mutate", "application/json", good, http.StatusNotFound},
		{"wrong content type", Path, "text/plain", good, http.StatusUnsupportedMediaType},
		{"not JSON", Path, "application/json", []byte("{"), http.StatusBadRequest},
		{"no request", Path, "application/json", []byte(`{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}`), http.StatusBadRequest},
		{"old version", Path, "application/json", bytes.Replace(good, []byte("admission.k8s.io/v1"), []byte("admission.k8s.io/v1beta1"), 1), http.StatusBadRequest},
		{"too large", Path, "application/json", append(good, bytes.Repeat([]byte(" "), maxReview)...), http.StatusRequestEntityTooLarge},
	} {
		if w := post(in, c.path, c.ctype, c.body); w.Code != c.code {
			t.Errorf("%s: status %d, want %d (%s)", c.name, w.Code, c.code, w.Body)
		}
	}
	r := httptest.NewRequest(http.MethodGet, Path, nil)
	w := httptest.NewRecorder()
	in.ServeHTTP(w, r)
	if w.Code != http.StatusMethodNotAllowed {
		t.Errorf("GET: status %d", w.Code)
	}
}

func TestReviewObjectNotAPod(t *testing.T) {
	in := newInjector(t)
	resp := in.Review(&admissionv1.AdmissionRequest{UID: "u", Kind: metav1.GroupVersionKind{Version: "v1", Kind: "Pod"},
		Operation: admissionv1.Create, Object: runtime.RawExtension{Raw: []byte(`[1,2]`)}})
	if resp.Allowed || !strings.Contains(resp.Result.Message, "not a pod") {
		t.Errorf("a non-pod object: %+v", resp)
	}
	// Other kinds and operations pass untouched.
	resp = in.Review(&admissionv1.AdmissionRequest{UID: "u", Kind: metav1.GroupVersionKind{Version: "v1", Kind: "Pod"},
		Operation: admissionv1.Update, Object: runtime.RawExtension{Raw: []byte(`garbage`)}})
	if !resp.Allowed || resp.Patch != nil {
		t.Errorf("an update: %+v", resp)
	}
}

func TestPatchAppliesAndIsIdempotent(t *testing.T) {
	in := newInjector(t)
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Annotations: map[string]string{AnnotationInject: "true", AnnotationAppID: "a"}},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "app"}}}}
	w := post(in, Path, "application/json", review(t, pod))
	var out admissionv1.AdmissionReview
	if err := json.Unmarshal(w.Body.Bytes(), &out); err != nil {
		t.Fatal(err)
	}
	if out.Response == nil || !out.Response.Allowed || out.Response.UID != "u1" || out.Response.PatchType == nil {
		t.Fatalf("response %+v", out.Response)
	}
	app, _ := ParseApp(pod.Annotations)
	injected := in.cfg.Mutate(pod, app)
	if !Injected(injected) || Injected(pod) {
		t.Fatal("Mutate changed its input or did not inject")
	}
	w = post(in, Path, "application/json", review(t, injected))
	var again admissionv1.AdmissionReview
	if err := json.Unmarshal(w.Body.Bytes(), &again); err != nil {
		t.Fatal(err)
	}
	if !again.Response.Allowed || again.Response.Patch != nil {
		t.Errorf("an injected pod got a patch again: %s", again.Response.Patch)
	}
}

func TestConfigRefused(t *testing.T) {
	if _, err := New(Config{TokenTTLSeconds: 60}, nil); err == nil {
		t.Error("a 60s token TTL was accepted")
	}
	if _, err := New(Config{RunAsUser: -1}, nil); err == nil {
		t.Error("a negative user was accepted")
	}
	for _, c := range []struct {
		cfg  Config
		want string
	}{
		{Config{Resolver: "xds"}, "need the control plane's address"},
		{Config{Resolver: "xds", ResolverConfig: "/etc/xds.yaml", ControlPlaneAddress: "cp:15010"}, "not both"},
		{Config{Resolver: "xds", ControlPlaneAddress: "cp:15010", PolicyConfigMap: "meshd-policy"}, "they get their policies from the control plane"},
		{Config{ControlPlaneAddress: "cp:15010"}, `resolver "kubernetes": only resolver xds uses one`},
		{Config{ControlPlaneNamespace: "mesh"}, "only resolver xds"},
	} {
		if _, err := New(c.cfg, nil); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("New(%+v): %v, want %q", c.cfg, err, c.want)
		}
	}
}

// TestSidecarControlPlaneArgs: sidecars on resolver xds are told where the
// control plane is by flags (the same for every pod: no object per
// namespace); sidecars on resolver kubernetes get no such flag.
func TestSidecarControlPlaneArgs(t *testing.T) {
	arg := func(args []string, name string) (string, bool) {
		for i, a := range args {
			if a == name && i+1 < len(args) {
				return args[i+1], true
			}
		}
		return "", false
	}
	in, err := New(Config{Resolver: "xds", ControlPlaneAddress: "meshd-controlplane.mesh.svc:15010", ControlPlaneNamespace: "mesh"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	sc := in.cfg.Sidecar(App{ID: "orders", Protocol: "http"}, "shop")
	for name, want := range map[string]string{"--resolver": "xds", "--control-plane-address": "meshd-controlplane.mesh.svc:15010", "--control-plane-namespace": "mesh"} {
		if got, _ := arg(sc.Args, name); got != want {
			t.Errorf("%s %q, want %q (args %q)", name, got, want, sc.Args)
		}
	}
	for _, name := range []string{"--policy-dir", "--resolver-config"} {
		if _, ok := arg(sc.Args, name); ok {
			t.Errorf("a sidecar on resolver xds got %s: %q", name, sc.Args)
		}
	}
	sc = newInjector(t).cfg.Sidecar(App{ID: "orders", Protocol: "http"}, "shop")
	if _, ok := arg(sc.Args, "--control-plane-address"); ok {
		t.Errorf("a sidecar on resolver kubernetes got --control-plane-address: %q", sc.Args)
	}
}

// FuzzParseApp: no annotation crashes the parser; what it accepts is a
// valid app (a DNS-label ID, a port in range, a known protocol).
func FuzzParseApp(f *testing.F) {
	f.Add("orders", "8080", "grpc", "3", "250", "2")
	f.Add("Orders", "70000", "thrift", "0", "soon", "-1")
	f.Fuzz(func(t *testing.T, id, port, proto, period, timeout, thresh string) {
		ann := map[string]string{AnnotationAppID: id, "dapr.io/app-port": port, AnnotationAppProtocol: proto,
			"dapr.io/app-health-probe-interval": period, AnnotationAppHealthTime: timeout, AnnotationAppHealthThresh: thresh}
		a, err := ParseApp(ann)
		if err != nil {
			if !strings.Contains(err.Error(), "annotation") {
				t.Fatalf("error %q names no annotation", err)
			}
			return
		}
		if a.ID == "" || a.Port < 1 || a.Port > 65535 || !protocols[a.Protocol] || a.HealthPeriod <= 0 || a.HealthTimeout <= 0 {
			t.Fatalf("accepted %+v", a)
		}
	})
}
