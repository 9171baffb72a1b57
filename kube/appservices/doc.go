// Package appservices is the app Services controller: for every app ID
// with meshd pods in a namespace it keeps the headless Service that the
// kubernetes resolver (package discovery/kubernetes) finds the app by.
//
// A meshd pod is one the injector labelled meshd.io/app-id={app ID}. For
// each namespace and app ID with at least one such pod (not finished),
// the controller keeps a Service named ServiceName(app ID):
//
//   - headless (clusterIP None), selecting meshd.io/app-id={app ID}, one
//     port named meshd-internal (50002, the sidecars' mTLS port), so that
//     the EndpointSlice controller makes its slices; the Service is
//     labelled meshd.io/app-id={app ID}, which Kubernetes copies to the
//     slices, and app.kubernetes.io/managed-by=meshd;
//   - owned by the app's pods (one owner reference each, kept in step), so
//     that the garbage collector removes it with the last pod even while
//     the controller is down; with the controller up it is deleted at once.
//
// A Service of that name the controller did not create (no managed-by
// label) is never changed or deleted: the app is logged and skipped. A
// managed Service edited by hand is set back; one deleted while pods run
// is made again.
//
// RBAC: list and watch pods; get, list, watch, create, update and delete
// services (in the namespaces watched).
package appservices
