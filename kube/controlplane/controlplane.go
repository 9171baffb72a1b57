package controlplane

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/meshd/meshd/certs"
	"github.com/meshd/meshd/kube/appservices"
	"github.com/meshd/meshd/kube/injector"
	"github.com/meshd/meshd/kube/policysource"
	"github.com/meshd/meshd/lifecycle"
)

// Options select the parts; the zero value runs none.
type Options struct {
	// Kubeconfig is a kubeconfig file ("": in-cluster configuration).
	Kubeconfig string
	// InjectorListen is host:port of the webhook ("": no injector).
	InjectorListen string
	// Webhook is the MutatingWebhookConfiguration whose caBundle is kept
	// equal to sentry's bundle ("": not kept).
	Webhook string
	// Injector configures the injected sidecars.
	Injector injector.Config
	// AppServices runs the app Services controller.
	AppServices bool
	// PolicySource "kubernetes" writes the policy ConfigMaps into
	// PolicyDir (which the xDS server serves); "" or "dir": PolicyDir is
	// the user's.
	PolicySource, PolicyDir string
	// Election elects the replica that runs the writers (the Lease
	// LeaseName in Namespace).
	Election Election
	// Namespace is the control plane's own (its ConfigMaps are _mesh; its
	// Lease).
	Namespace   string
	TrustDomain spiffeid.TrustDomain
	Logger      *slog.Logger
}

// Enabled reports whether any part needs the Kubernetes API.
func (o Options) Enabled() bool {
	return o.InjectorListen != "" || o.AppServices || o.PolicySource == "kubernetes"
}

// Components builds the selected parts; src is the control plane's
// identity (its certificate serves the webhook; its bundle is the
// caBundle). The listener is bound here, so a port clash fails at start.
func Components(o Options, src *certs.Source) ([]lifecycle.Component, error) {
	if !o.Enabled() {
		return nil, nil
	}
	switch o.PolicySource {
	case "", "dir", "kubernetes":
	default:
		return nil, fmt.Errorf("controlplane: --policy-source %q: want dir or kubernetes", o.PolicySource)
	}
	if o.PolicySource == "kubernetes" && o.PolicyDir == "" {
		return nil, errors.New("controlplane: --policy-source kubernetes needs --policy-dir, the directory it writes and serves")
	}
	log := o.Logger
	if log == nil {
		log = slog.Default()
	}
	cfg, err := restConfig(o.Kubeconfig)
	if err != nil {
		return nil, err
	}
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("controlplane: %w", err)
	}
	var out []lifecycle.Component
	if o.InjectorListen != "" {
		in, err := injector.New(o.Injector, log)
		if err != nil {
			return nil, err
		}
		l, err := net.Listen("tcp", o.InjectorListen)
		if err != nil {
			return nil, fmt.Errorf("controlplane: --injector-listen: %w", err)
		}
		out = append(out, lifecycle.Func(func(ctx context.Context) error { return injector.Serve(ctx, l, src, in) }))
		log.Info("controlplane: sidecar injector", "listen", l.Addr().String(), "image", in.Config().Image, "webhook", o.Webhook)
		if o.Webhook != "" {
			out = append(out, lifecycle.Func(func(ctx context.Context) error {
				keepCABundle(ctx, cs, o.Webhook, src, o.TrustDomain, log)
				return nil
			}))
		}
	}
	// The writers run on the elected replica only: the app Services
	// controller, and the Events on policy ConfigMaps.
	var el *elector
	if !o.Election.Disabled && (o.AppServices || o.PolicySource == "kubernetes") {
		if o.Namespace == "" {
			return nil, errors.New("controlplane: leader election needs the control plane's namespace (its Lease)")
		}
		e := o.Election
		if err := e.setDefaults(); err != nil {
			return nil, err
		}
		el = &elector{cs: cs, namespace: o.Namespace, e: e, log: log}
	}
	if o.AppServices {
		c, err := appservices.New(cs, appservices.Options{Logger: log})
		if err != nil {
			return nil, err
		}
		if el == nil {
			out = append(out, lifecycle.Func(c.Run))
		} else {
			// A new controller each term (informers do not restart).
			el.jobs = append(el.jobs, func(ctx context.Context) error {
				c, err := appservices.New(cs, appservices.Options{Logger: log})
				if err != nil {
					return err
				}
				return c.Run(ctx)
			})
		}
	}
	if o.PolicySource == "kubernetes" {
		po := policysource.Options{MeshNamespace: o.Namespace, Dir: o.PolicyDir, Logger: log}
		if el != nil {
			po.Leading = el.Leading
		}
		c, err := policysource.New(cs, po)
		if err != nil {
			return nil, err
		}
		out = append(out, lifecycle.Func(c.Run))
	}
	if el != nil {
		out = append(out, lifecycle.Func(el.Run))
		log.Info("controlplane: leader election", "lease", o.Namespace+"/"+LeaseName, "identity", el.e.Identity)
	}
	return out, nil
}

// keepCABundle writes the trust bundle into the webhook configuration now
// and whenever the source changes (root rotation), retrying failures.
func keepCABundle(ctx context.Context, cs kubernetes.Interface, name string, src *certs.Source, td spiffeid.TrustDomain, log *slog.Logger) {
	for {
		updated := src.Updated()
		var next <-chan time.Time
		if err := writeCABundle(ctx, cs, name, src, td); err != nil {
			log.Warn("controlplane: writing the webhook's caBundle failed; retrying", "webhook", name, "err", err)
			next = time.After(5 * time.Second)
		}
		select {
		case <-ctx.Done():
			return
		case <-updated:
		case <-next:
		}
	}
}

func writeCABundle(ctx context.Context, cs kubernetes.Interface, name string, src *certs.Source, td spiffeid.TrustDomain) error {
	b, err := src.GetX509BundleForTrustDomain(td)
	if err != nil {
		return fmt.Errorf("controlplane: %w", err)
	}
	return injector.PatchCABundle(ctx, cs, name, certs.EncodeCertsPEM(b.X509Authorities()...))
}

func restConfig(kubeconfig string) (*rest.Config, error) {
	if kubeconfig != "" {
		cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
		if err != nil {
			return nil, fmt.Errorf("controlplane: --kubeconfig: %w", err)
		}
		return cfg, nil
	}
	cfg, err := rest.InClusterConfig()
	if err != nil {
		return nil, fmt.Errorf("controlplane: no --kubeconfig and not in a pod: %w", err)
	}
	return cfg, nil
}
