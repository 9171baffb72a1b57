// Package controlplane runs the Kubernetes parts of meshd's control plane
// (cmd/controlplane) as lifecycle components beside the xDS server: the
// sidecar injector's webhook (served with the control plane's own
// sentry-issued certificate, its configuration's caBundle kept equal to
// sentry's trust bundle), the app Services controller, and the policy
// ConfigMaps written into the policy directory the xDS server serves.
package controlplane
