package kubernetes_test

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"

	"github.com/meshd/meshd/certs"
	"github.com/meshd/meshd/sentry/ca"
	"github.com/meshd/meshd/sentry/sentrypb"
	"github.com/meshd/meshd/tests/harness"
)

// Helpers of the sentry kubernetes-validator tests (prefixed ident, as the
// package is shared with the discovery tests).

// identNamespace creates namespace ns.
func identNamespace(t testing.TB, cs kubernetes.Interface, ns string) {
	t.Helper()
	if _, err := cs.CoreV1().Namespaces().Create(context.Background(),
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
}

// identServiceAccount creates a service account and returns it.
func identServiceAccount(t testing.TB, cs kubernetes.Interface, ns, name string) *corev1.ServiceAccount {
	t.Helper()
	sa, err := cs.CoreV1().ServiceAccounts(ns).Create(context.Background(),
		&corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return sa
}

// identPod creates a pod running as service account sa with annotations
// and writes its status as a kubelet would (Running); it returns the pod.
func identPod(t testing.TB, cs kubernetes.Interface, ns, name, sa string, ann map[string]string) *corev1.Pod {
	t.Helper()
	ctx := context.Background()
	p, err := cs.CoreV1().Pods(ns).Create(ctx, &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, Annotations: ann},
		Spec: corev1.PodSpec{ServiceAccountName: sa,
			Containers: []corev1.Container{{Name: "app", Image: "example.invalid/app"}}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	p.Status = corev1.PodStatus{Phase: corev1.PodRunning,
		Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue, LastTransitionTime: metav1.Now()}}}
	p, err = cs.CoreV1().Pods(ns).UpdateStatus(ctx, p, metav1.UpdateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// identTokenRequest mints a token through the TokenRequest API for
// service account sa, with audiences (none: the API server's) and, if pod
// is not nil, bound to it.
func identTokenRequest(t testing.TB, cs kubernetes.Interface, ns, sa string, pod *corev1.Pod, ttl time.Duration, audiences ...string) string {
	t.Helper()
	secs := int64(ttl / time.Second)
	tr := &authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{Audiences: audiences, ExpirationSeconds: &secs}}
	if pod != nil {
		tr.Spec.BoundObjectRef = &authenticationv1.BoundObjectReference{Kind: "Pod", APIVersion: "v1", Name: pod.Name, UID: pod.UID}
	}
	out, err := cs.CoreV1().ServiceAccounts(ns).CreateToken(context.Background(), sa, tr, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("TokenRequest for %s/%s: %v", ns, sa, err)
	}
	return out.Status.Token
}

// identMintToken signs a bound service-account token with the API
// server's own key, in the shape the API server gives its tokens
// (RS256, kid from the public key, the kubernetes.io private claims), so
// that the real API server judges it; iat and exp are the caller's.
func identMintToken(t testing.TB, k *harness.Kube, sa *corev1.ServiceAccount, pod *corev1.Pod, audience string, iat, exp time.Time) string {
	t.Helper()
	b, err := os.ReadFile(k.ServiceAccountKeyFile)
	if err != nil {
		t.Fatal(err)
	}
	blk, _ := pem.Decode(b)
	if blk == nil {
		t.Fatal("service-account key is not PEM")
	}
	key, err := x509.ParsePKCS1PrivateKey(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKIXPublicKey(&key.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	kidSum := sha256.Sum256(der)
	type ref struct {
		Name string    `json:"name"`
		UID  types.UID `json:"uid"`
	}
	claims := map[string]any{
		"aud": []string{audience}, "iss": k.Issuer, "sub": "system:serviceaccount:" + sa.Namespace + ":" + sa.Name,
		"iat": iat.Unix(), "nbf": iat.Unix(), "exp": exp.Unix(), "jti": fmt.Sprintf("meshd-test-%d", time.Now().UnixNano()),
		"kubernetes.io": map[string]any{
			"namespace":      sa.Namespace,
			"serviceaccount": ref{sa.Name, sa.UID},
			"pod":            ref{pod.Name, pod.UID},
		},
	}
	enc := func(v any) string {
		j, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		return base64.RawURLEncoding.EncodeToString(j)
	}
	signed := enc(map[string]string{"alg": "RS256", "kid": base64.RawURLEncoding.EncodeToString(kidSum[:])}) + "." + enc(claims)
	h := sha256.Sum256([]byte(signed))
	sig, err := rsa.SignPKCS1v15(rand.Reader, key, crypto.SHA256, h[:])
	if err != nil {
		t.Fatal(err)
	}
	return signed + "." + base64.RawURLEncoding.EncodeToString(sig)
}

// identSentryKubeconfig gives sentry a service account in meshd-system
// with the RBAC the docs name (create tokenreviews, get pods), each verb
// in its own ClusterRole and binding (named sentry-tokenreviews and
// sentry-pods) so a test can take one away, and writes a kubeconfig that
// authenticates as it. verbs limits what is granted ("tokenreviews",
// "pods", "store"; none: the first two).
func identSentryKubeconfig(t testing.TB, k *harness.Kube, cs kubernetes.Interface, saName string, verbs ...string) string {
	t.Helper()
	ctx := context.Background()
	if _, err := cs.CoreV1().Namespaces().Get(ctx, "meshd-system", metav1.GetOptions{}); err != nil {
		identNamespace(t, cs, "meshd-system")
	}
	identServiceAccount(t, cs, "meshd-system", saName)
	if len(verbs) == 0 {
		verbs = []string{"tokenreviews", "pods"}
	}
	rules := map[string][]rbacv1.PolicyRule{
		"tokenreviews": {{APIGroups: []string{"authentication.k8s.io"}, Resources: []string{"tokenreviews"}, Verbs: []string{"create"}}},
		"pods":         {{APIGroups: []string{""}, Resources: []string{"pods"}, Verbs: []string{"get"}}},
		// --ca-store kubernetes (cluster-wide here for brevity; the docs
		// grant secrets and leases in sentry's namespace only).
		"store": {
			{APIGroups: []string{""}, Resources: []string{"secrets"}, Verbs: []string{"get", "create", "update"}},
			{APIGroups: []string{"coordination.k8s.io"}, Resources: []string{"leases"}, Verbs: []string{"get", "create", "update"}},
			{APIGroups: []string{""}, Resources: []string{"pods"}, Verbs: []string{"list"}},
			{APIGroups: []string{""}, Resources: []string{"configmaps"}, Verbs: []string{"get", "create", "update"}},
		},
	}
	for _, v := range verbs {
		name := saName + "-" + v
		if _, err := cs.RbacV1().ClusterRoles().Create(ctx, &rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: name},
			Rules: rules[v]}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		if _, err := cs.RbacV1().ClusterRoleBindings().Create(ctx, &rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: name},
			RoleRef:  rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: name},
			Subjects: []rbacv1.Subject{{Kind: "ServiceAccount", Namespace: "meshd-system", Name: saName}}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	tok := identTokenRequest(t, cs, "meshd-system", saName, nil, 2*time.Hour)
	path := filepath.Join(t.TempDir(), saName+".kubeconfig")
	k.WriteKubeconfig(path, tok)
	return path
}

// identSigner asks a sentry for certificates directly over gRPC (TLS,
// sentry's SPIFFE ID verified against its bundle), to see each refusal's
// status as a sidecar would.
type identSigner struct {
	api  sentrypb.CAClient
	conn *grpc.ClientConn
	csr  []byte
}

func newIdentSigner(t testing.TB, s *harness.Sentry) *identSigner {
	t.Helper()
	td := spiffeid.RequireTrustDomainFromString(s.TrustDom)
	b, err := x509bundle.Load(td, s.BundleFile())
	if err != nil {
		t.Fatal(err)
	}
	conn, err := grpc.NewClient(s.Addr, grpc.WithTransportCredentials(credentials.NewTLS(
		tlsconfig.TLSClientConfig(b, tlsconfig.AuthorizeID(ca.SentryID(td))))))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	key, err := certs.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	csr, err := certs.NewCSR(key)
	if err != nil {
		t.Fatal(err)
	}
	return &identSigner{api: sentrypb.NewCAClient(conn), conn: conn, csr: csr}
}

// sign asks for app in ns with tok and returns the SPIFFE ID signed.
func (s *identSigner) sign(ctx context.Context, tok, ns, app string) (string, error) {
	resp, err := s.api.SignCertificate(ctx, &sentrypb.SignCertificateRequest{
		AppId: app, Namespace: ns, TrustDomain: "cluster.local", CsrPem: s.csr, Token: tok})
	if err != nil {
		return "", err
	}
	chain, err := certs.ParseCertsPEM(resp.GetCertChainPem())
	if err != nil {
		return "", err
	}
	if len(chain) == 0 || len(chain[0].URIs) != 1 {
		return "", fmt.Errorf("no SPIFFE ID in the certificate")
	}
	return chain[0].URIs[0].String(), nil
}

// identLogHas reports whether log has a line containing every part.
func identLogHas(log string, parts ...string) bool {
	for _, line := range strings.Split(log, "\n") {
		ok := true
		for _, p := range parts {
			if !strings.Contains(line, p) {
				ok = false
				break
			}
		}
		if ok {
			return true
		}
	}
	return false
}
