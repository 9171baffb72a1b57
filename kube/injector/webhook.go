package injector

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net"
	"net/http"
	"strconv"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	admissionv1 "k8s.io/api/admission/v1"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
)

// Path is where Handler answers AdmissionReviews.
const Path = "/inject"

// maxReview bounds an AdmissionReview body (the API server sends objects of
// at most 3 MiB, wrapped once).
const maxReview = 8 << 20

// Injector answers the webhook's AdmissionReviews.
type Injector struct {
	cfg Config
	log *slog.Logger
}

// New checks cfg and fills in its defaults.
func New(cfg Config, log *slog.Logger) (*Injector, error) {
	if err := cfg.setDefaults(); err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.Default()
	}
	return &Injector{cfg: cfg, log: log}, nil
}

// Config is the injector's configuration with its defaults.
func (in *Injector) Config() Config { return in.cfg }

// Review decides one admission request: nil error and a response.
func (in *Injector) Review(req *admissionv1.AdmissionRequest) *admissionv1.AdmissionResponse {
	resp := &admissionv1.AdmissionResponse{UID: req.UID, Allowed: true}
	if req.Kind.Group != "" || req.Kind.Kind != "Pod" || req.Operation != admissionv1.Create || req.SubResource != "" {
		return resp
	}
	var pod corev1.Pod
	if err := json.Unmarshal(req.Object.Raw, &pod); err != nil {
		return deny(resp, http.StatusBadRequest, "meshd: the request's object is not a pod: "+err.Error())
	}
	if pod.Namespace == "" {
		pod.Namespace = req.Namespace // not yet set on a pod being created
	}
	want, err := Wants(pod.Annotations)
	if err != nil {
		return deny(resp, http.StatusBadRequest, "meshd: "+err.Error())
	}
	if !want || Injected(&pod) {
		return resp
	}
	app, err := ParseApp(pod.Annotations)
	if err != nil {
		in.log.Info("injector: pod refused", "namespace", req.Namespace, "pod", podName(&pod), "err", err)
		return deny(resp, http.StatusBadRequest, "meshd: "+err.Error())
	}
	patch, err := in.cfg.Patch(&pod, app)
	if err != nil {
		return deny(resp, http.StatusInternalServerError, err.Error())
	}
	pt := admissionv1.PatchTypeJSONPatch
	resp.Patch, resp.PatchType = patch, &pt
	in.log.Debug("injector: sidecar injected", "namespace", req.Namespace, "pod", podName(&pod), "app_id", app.ID)
	return resp
}

func podName(p *corev1.Pod) string {
	if p.Name != "" {
		return p.Name
	}
	return p.GenerateName + "*"
}

func deny(resp *admissionv1.AdmissionResponse, code int32, msg string) *admissionv1.AdmissionResponse {
	resp.Allowed = false
	resp.Result = &metav1.Status{Status: metav1.StatusFailure, Code: code, Message: msg, Reason: metav1.StatusReasonBadRequest}
	return resp
}

// ServeHTTP implements the webhook's HTTP side: POST of an AdmissionReview
// (admission.k8s.io/v1) as JSON, answered with one.
func (in *Injector) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != Path {
		http.NotFound(w, r)
		return
	}
	if r.Method != http.MethodPost {
		http.Error(w, "injector: POST an AdmissionReview", http.StatusMethodNotAllowed)
		return
	}
	if mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type")); err != nil || mt != "application/json" {
		http.Error(w, "injector: want Content-Type application/json", http.StatusUnsupportedMediaType)
		return
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, maxReview+1))
	if err != nil {
		http.Error(w, "injector: reading the request: "+err.Error(), http.StatusBadRequest)
		return
	}
	if len(body) > maxReview {
		http.Error(w, "injector: AdmissionReview too large", http.StatusRequestEntityTooLarge)
		return
	}
	var review admissionv1.AdmissionReview
	if err := json.Unmarshal(body, &review); err != nil {
		http.Error(w, "injector: not an AdmissionReview: "+err.Error(), http.StatusBadRequest)
		return
	}
	if review.Request == nil {
		http.Error(w, "injector: the AdmissionReview has no request", http.StatusBadRequest)
		return
	}
	if review.APIVersion != "admission.k8s.io/v1" || review.Kind != "AdmissionReview" {
		http.Error(w, "injector: want an admission.k8s.io/v1 AdmissionReview", http.StatusBadRequest)
		return
	}
	out := admissionv1.AdmissionReview{TypeMeta: review.TypeMeta, Response: in.Review(review.Request)}
	b, err := json.Marshal(out)
	if err != nil {
		http.Error(w, "injector: "+err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(b)
}

// Serve serves h over TLS on l with the certificate of src (an SVID whose
// DNS names are the webhook's host names: sentry --server-name), until ctx
// ends. A certificate renewed by src is used from the next handshake on.
func Serve(ctx context.Context, l net.Listener, src x509svid.Source, h http.Handler) error {
	tc := tlsconfig.TLSServerConfig(src)
	tc.MinVersion = tls.VersionTLS12
	srv := &http.Server{Handler: h, TLSConfig: tc, ReadHeaderTimeout: 10 * time.Second, ReadTimeout: 30 * time.Second}
	done := make(chan struct{})
	go func() {
		select {
		case <-ctx.Done():
			sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			_ = srv.Shutdown(sctx)
		case <-done:
		}
	}()
	defer close(done)
	if err := srv.ServeTLS(l, "", ""); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("injector: serve: %w", err)
	}
	return nil
}

// Webhook describes where the API server reaches the injector.
type Webhook struct {
	Name string // of the MutatingWebhookConfiguration
	// Service (namespace/name, port) or URL: the API server's way to the
	// injector (a URL for tests on loopback).
	ServiceNamespace, ServiceName string
	ServicePort                   int32
	URL                           string
	CABundle                      []byte // PEM: sentry's trust bundle
	// ExcludeNamespaces are never injected (meshd's own, kube-system):
	// their pods are created even while the injector is down.
	ExcludeNamespaces []string
	// FailurePolicy: "" is Fail (see WebhookConfiguration).
	FailurePolicy  admissionregistrationv1.FailurePolicyType
	TimeoutSeconds int32 // 0: 10
}

// NamespaceOptOutLabel on a namespace with value "disabled" keeps the
// injector away from its pods (the webhook's namespaceSelector).
const NamespaceOptOutLabel = "meshd.io/inject"

// WebhookConfiguration is the MutatingWebhookConfiguration of the
// injector. Its failure policy is Fail by default: a pod that asks for
// the mesh must not start without its sidecar (it would serve its app port
// with no identity and no policy in front of it); the cost, pods not
// created while no injector answers, is bounded by excluding meshd's own
// namespace, kube-system and every namespace labelled
// meshd.io/inject=disabled, and by running the injector with two replicas.
func WebhookConfiguration(w Webhook) *admissionregistrationv1.MutatingWebhookConfiguration {
	fp := w.FailurePolicy
	if fp == "" {
		fp = admissionregistrationv1.Fail
	}
	timeout := w.TimeoutSeconds
	if timeout == 0 {
		timeout = 10
	}
	none := admissionregistrationv1.SideEffectClassNone
	never := admissionregistrationv1.NeverReinvocationPolicy
	equivalent := admissionregistrationv1.Equivalent
	path := Path
	cc := admissionregistrationv1.WebhookClientConfig{CABundle: w.CABundle}
	if w.URL != "" {
		u := w.URL
		cc.URL = &u
	} else {
		port := w.ServicePort
		cc.Service = &admissionregistrationv1.ServiceReference{Namespace: w.ServiceNamespace, Name: w.ServiceName, Path: &path, Port: &port}
	}
	return &admissionregistrationv1.MutatingWebhookConfiguration{
		TypeMeta:   metav1.TypeMeta{APIVersion: "admissionregistration.k8s.io/v1", Kind: "MutatingWebhookConfiguration"},
		ObjectMeta: metav1.ObjectMeta{Name: w.Name},
		Webhooks: []admissionregistrationv1.MutatingWebhook{{
			Name:         "inject.meshd.io",
			ClientConfig: cc,
			Rules: []admissionregistrationv1.RuleWithOperations{{
				Operations: []admissionregistrationv1.OperationType{admissionregistrationv1.Create},
				Rule: admissionregistrationv1.Rule{APIGroups: []string{""}, APIVersions: []string{"v1"}, Resources: []string{"pods"},
					Scope: ptr(admissionregistrationv1.NamespacedScope)},
			}},
			FailurePolicy:      &fp,
			MatchPolicy:        &equivalent,
			SideEffects:        &none,
			TimeoutSeconds:     &timeout,
			ReinvocationPolicy: &never,
			NamespaceSelector: &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{
				{Key: NamespaceOptOutLabel, Operator: metav1.LabelSelectorOpNotIn, Values: []string{"disabled"}},
				{Key: "kubernetes.io/metadata.name", Operator: metav1.LabelSelectorOpNotIn, Values: excluded(w.ExcludeNamespaces)},
			}},
			AdmissionReviewVersions: []string{"v1"},
		}},
	}
}

func excluded(ns []string) []string {
	out := []string{"kube-system"}
	for _, n := range ns {
		if n != "kube-system" {
			out = append(out, n)
		}
	}
	return out
}

func ptr[T any](v T) *T { return &v }

// PatchCABundle writes bundle (PEM: sentry's trust bundle) as the caBundle
// of every webhook of the MutatingWebhookConfiguration name, so the API
// server trusts the injector's sentry-issued certificate; the control
// plane calls it at start and whenever the bundle changes (root
// rotation). A caBundle that is already equal is not written.
func PatchCABundle(ctx context.Context, cs kubernetes.Interface, name string, bundle []byte) error {
	if len(bundle) == 0 {
		return errors.New("injector: empty trust bundle")
	}
	api := cs.AdmissionregistrationV1().MutatingWebhookConfigurations()
	cur, err := api.Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return fmt.Errorf("injector: webhook configuration %s: %w", name, err)
	}
	var ops []patchOp
	for i, w := range cur.Webhooks {
		if !bytes.Equal(w.ClientConfig.CABundle, bundle) {
			ops = append(ops, patchOp{Op: "add", Path: "/webhooks/" + strconv.Itoa(i) + "/clientConfig/caBundle", Value: bundle})
		}
	}
	if len(ops) == 0 {
		return nil
	}
	// The test keeps the patch to the configuration that was read.
	ops = append([]patchOp{{Op: "test", Path: "/metadata/resourceVersion", Value: cur.ResourceVersion}}, ops...)
	b, err := json.Marshal(ops)
	if err != nil {
		return fmt.Errorf("injector: %w", err)
	}
	if _, err := api.Patch(ctx, name, types.JSONPatchType, b, metav1.PatchOptions{FieldManager: "meshd-controlplane"}); err != nil {
		return fmt.Errorf("injector: patch the caBundle of %s: %w", name, err)
	}
	return nil
}
