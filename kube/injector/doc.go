// Package injector is meshd's sidecar injector: a Kubernetes mutating
// admission webhook that adds the meshd sidecar to the pods that ask for it.
//
// A pod joins the mesh with annotations (Annotations lists them; Dapr's
// dapr.io/ names are accepted as synonyms, so a Dapr manifest works
// unchanged): meshd.io/inject: "true" (or dapr.io/enabled: "true") and an
// app ID. Such a pod gets, in one JSON patch:
//
//   - the meshd container as a native sidecar: the first init container,
//     restartPolicy Always, so it starts (and holds its certificate, by its
//     startup probe) before the app and stops after it; probes on meshd's
//     /v1.0/healthz on its public port; resource requests; a non-root,
//     read-only-root-filesystem security context with no capabilities;
//   - a projected service-account token with sentry's audience (sentry's
//     kubernetes validator turns it into the pod's SPIFFE identity) and the
//     trust-bundle ConfigMap sentry publishes into the namespace;
//   - DAPR_HTTP_PORT and DAPR_GRPC_PORT in every app container, and
//     HTTP_PROXY only when the pod asks for transparent calls; a variable
//     the container sets itself is left as it is.
//
// Injection is idempotent: a pod that already holds the meshd container is
// allowed unchanged. A pod that asks to join with a bad annotation (unknown
// protocol, port out of range, app ID that is not a DNS label, a meshd.io/
// and a dapr.io/ name that disagree) is refused with a message naming the
// annotation. Pods that do not ask are allowed unchanged.
//
// Handler serves the AdmissionReview protocol; Serve serves it over TLS
// with a certificate from an X509-SVID source (sentry's, rotated like any
// other). The webhook configuration (failure policy, namespace opt-out) is
// WebhookConfiguration's.
package injector
