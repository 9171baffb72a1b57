package harness

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

// KubeVersion is the Kubernetes release the tests run: kube-apiserver,
// kube-controller-manager and the client-go of go.mod are one release.
const KubeVersion = "v1.37.2"

var kubeTool = &cachedTool{name: "kubernetes", file: "kube-apiserver", version: KubeVersion, envVar: "MESHD_KUBE_DIR",
	script: "tests/kubernetes/install.sh", timeout: 40 * time.Minute}

// KubeDir returns the directory holding kube-apiserver,
// kube-controller-manager and etcd, building them with
// tests/kubernetes/install.sh into .cache/kubernetes/{version}/ the first
// time (about 10 minutes on 2 cores; logged). MESHD_KUBE_DIR overrides it.
func KubeDir(t testing.TB) string { return kubeTool.binary(t) }

// KubeAdminToken is the bearer token of the API server's admin user
// (group system:masters), from its static token file.
const KubeAdminToken = "meshd-test-admin-token"

// Kube is a real Kubernetes control plane on loopback: etcd and
// kube-apiserver (RBAC on, service-account tokens signed with a key of the
// test's), and, when asked, kube-controller-manager. Nothing in it is a
// fake; there are no nodes and no kubelet, so a test that needs a running
// pod creates the Pod and patches its status itself.
type Kube struct {
	t       testing.TB
	dir     string // binaries
	work    string // data, keys, certs, kubeconfig
	etcd    *Process
	api     *Process
	cm      *Process
	apiArgs []string

	// Port is the API server's secure port on 127.0.0.1.
	Port int
	// Kubeconfig is the path of an admin kubeconfig for the API server.
	Kubeconfig string
	// Issuer is the service-account token issuer (the "iss" claim), also
	// the API server's only accepted audience unless a token asks for one.
	Issuer string
	// ServiceAccountKeyFile is the PEM RSA key the API server signs
	// service-account tokens with (a test may mint a token with it that
	// the real API server then judges, an expired one say).
	ServiceAccountKeyFile string
}

// URL is the API server's base URL.
func (k *Kube) URL() string { return "https://127.0.0.1:" + strconv.Itoa(k.Port) }

// StartKube starts etcd and kube-apiserver on free loopback ports and
// waits until the API server is ready. Everything stops when the test
// ends.
func StartKube(t testing.TB) *Kube {
	t.Helper()
	k := &Kube{t: t, dir: KubeDir(t), work: t.TempDir(), Issuer: "https://kubernetes.default.svc.cluster.local"}
	etcdClient, etcdPeer := FreePort(t), FreePort(t)
	k.etcd = Start(t, "etcd", filepath.Join(k.dir, "etcd"),
		"--data-dir", filepath.Join(k.work, "etcd"), "--name", "meshd-test",
		"--listen-client-urls", "http://127.0.0.1:"+strconv.Itoa(etcdClient),
		"--advertise-client-urls", "http://127.0.0.1:"+strconv.Itoa(etcdClient),
		"--listen-peer-urls", "http://127.0.0.1:"+strconv.Itoa(etcdPeer),
		"--initial-advertise-peer-urls", "http://127.0.0.1:"+strconv.Itoa(etcdPeer),
		"--initial-cluster", "meshd-test=http://127.0.0.1:"+strconv.Itoa(etcdPeer),
		"--log-level", "warn", "--unsafe-no-fsync")
	WaitHTTP(t, "http://127.0.0.1:"+strconv.Itoa(etcdClient)+"/health", http.StatusOK, 30*time.Second)

	saKey := filepath.Join(k.work, "sa.key")
	k.ServiceAccountKeyFile = saKey
	saPub := filepath.Join(k.work, "sa.pub")
	writeRSAKeyPair(t, saKey, saPub)
	tokens := filepath.Join(k.work, "tokens.csv")
	if err := os.WriteFile(tokens, []byte(KubeAdminToken+",meshd-admin,meshd-admin-uid,system:masters\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	k.Port = FreePort(t)
	k.apiArgs = []string{
		"--etcd-servers", "http://127.0.0.1:" + strconv.Itoa(etcdClient),
		"--bind-address", "127.0.0.1", "--advertise-address", "127.0.0.1",
		"--secure-port", strconv.Itoa(k.Port), "--cert-dir", filepath.Join(k.work, "certs"),
		"--service-account-issuer", k.Issuer,
		"--service-account-key-file", saPub, "--service-account-signing-key-file", saKey,
		"--api-audiences", k.Issuer,
		"--service-cluster-ip-range", "10.0.0.0/24",
		"--authorization-mode", "RBAC", "--token-auth-file", tokens,
		"--endpoint-reconciler-type", "none",
		// No kubelet runs: pods are created and their status patched by
		// the tests; service accounts are created explicitly.
		"--disable-admission-plugins", "ServiceAccount",
		"--allow-privileged=true",
	}
	k.startAPI()
	k.Kubeconfig = filepath.Join(k.work, "admin.kubeconfig")
	k.writeKubeconfig(k.Kubeconfig, KubeAdminToken)
	return k
}

func (k *Kube) startAPI() {
	k.t.Helper()
	k.api = Start(k.t, "kube-apiserver@"+strconv.Itoa(k.Port), filepath.Join(k.dir, "kube-apiserver"), k.apiArgs...)
	if err := k.waitReady(60 * time.Second); err != nil {
		k.t.Fatalf("kube-apiserver: %v", err)
	}
}

// waitReady polls /readyz with the admin token.
func (k *Kube) waitReady(d time.Duration) error {
	c := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{TLSClientConfig: insecureTLS()}}
	deadline := time.Now().Add(d)
	var last string
	for time.Now().Before(deadline) {
		req, _ := http.NewRequest(http.MethodGet, k.URL()+"/readyz", nil)
		req.Header.Set("Authorization", "Bearer "+KubeAdminToken)
		resp, err := c.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			last = resp.Status
		} else {
			last = err.Error()
		}
		if k.api.Exited() {
			return fmt.Errorf("exited before it was ready\n%s", k.api.Log())
		}
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("not ready after %s (last: %s)", d, last)
}

// StopAPIServer stops kube-apiserver (etcd keeps running), to test what
// clients do while it is down.
func (k *Kube) StopAPIServer() {
	k.t.Helper()
	if err := k.api.Stop(10 * time.Second); err != nil {
		k.t.Logf("kube-apiserver stop: %v", err)
	}
}

// StartAPIServer starts kube-apiserver again on the same port, with the
// same etcd, keys and certificates, and waits until it is ready.
func (k *Kube) StartAPIServer() {
	k.t.Helper()
	k.startAPI()
}

// StartControllerManager runs kube-controller-manager with only the given
// controllers (for example "endpointslice"), against this API server as
// its admin.
func (k *Kube) StartControllerManager(controllers ...string) {
	k.t.Helper()
	if k.cm != nil {
		k.t.Fatal("harness: kube-controller-manager already running")
	}
	k.cm = Start(k.t, "kube-controller-manager", filepath.Join(k.dir, "kube-controller-manager"),
		"--kubeconfig", k.Kubeconfig, "--controllers", strings.Join(controllers, ","),
		"--leader-elect=false", "--use-service-account-credentials=false",
		"--bind-address", "127.0.0.1", "--secure-port", strconv.Itoa(FreePort(k.t)),
		"--concurrent-service-endpoint-syncs", "5", "--endpointslice-updates-batch-period", "0s")
}

// RestConfig is an admin client configuration for the API server.
func (k *Kube) RestConfig() *rest.Config {
	k.t.Helper()
	cfg, err := clientcmd.BuildConfigFromFlags("", k.Kubeconfig)
	if err != nil {
		k.t.Fatal(err)
	}
	return cfg
}

// Client is an admin clientset for the API server.
func (k *Kube) Client() kubernetes.Interface {
	k.t.Helper()
	cs, err := kubernetes.NewForConfig(k.RestConfig())
	if err != nil {
		k.t.Fatal(err)
	}
	return cs
}

// WriteKubeconfig writes a kubeconfig for this API server that
// authenticates with token (a service-account token, say) to path.
func (k *Kube) WriteKubeconfig(path, token string) {
	k.t.Helper()
	k.writeKubeconfig(path, token)
}

func (k *Kube) writeKubeconfig(path, token string) {
	k.t.Helper()
	ca, err := os.ReadFile(filepath.Join(k.work, "certs", "apiserver.crt"))
	if err != nil {
		k.t.Fatalf("harness: the API server's self-signed certificate: %v", err)
	}
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["meshd-test"] = &clientcmdapi.Cluster{Server: k.URL(), CertificateAuthorityData: ca}
	cfg.AuthInfos["meshd-test"] = &clientcmdapi.AuthInfo{Token: token}
	cfg.Contexts["meshd-test"] = &clientcmdapi.Context{Cluster: "meshd-test", AuthInfo: "meshd-test"}
	cfg.CurrentContext = "meshd-test"
	if err := clientcmd.WriteToFile(*cfg, path); err != nil {
		k.t.Fatal(err)
	}
}

// SetPodReady writes a pod's status as a kubelet would: Running, with the
// pod IP and the Ready condition (no kubelet runs in these tests).
func (k *Kube) SetPodReady(ns, name, ip string, ready bool) {
	k.t.Helper()
	cs := k.Client()
	ctx := context.Background()
	pod, err := cs.CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		k.t.Fatal(err)
	}
	cond := corev1.ConditionFalse
	if ready {
		cond = corev1.ConditionTrue
	}
	pod.Status = corev1.PodStatus{
		Phase: corev1.PodRunning, PodIP: ip, PodIPs: []corev1.PodIP{{IP: ip}}, HostIP: "127.0.0.1",
		Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: cond, LastTransitionTime: metav1.Now()}},
	}
	if _, err := cs.CoreV1().Pods(ns).UpdateStatus(ctx, pod, metav1.UpdateOptions{}); err != nil {
		k.t.Fatal(err)
	}
}

// WaitFor polls f every 50ms until it returns nil or d passes; it fails
// the test with f's last error.
func WaitFor(t testing.TB, d time.Duration, f func(ctx context.Context) error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	var err error
	for {
		if err = f(ctx); err == nil {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("after %s: %v", d, err)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// insecureTLS is for polling /readyz before the API server has written
// the certificate a client would verify.
func insecureTLS() *tls.Config { return &tls.Config{InsecureSkipVerify: true} }

func writeRSAKeyPair(t testing.TB, keyPath, pubPath string) {
	t.Helper()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	pub, err := x509.MarshalPKIXPublicKey(&key.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyPath, pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(pubPath, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pub}), 0o644); err != nil {
		t.Fatal(err)
	}
}
