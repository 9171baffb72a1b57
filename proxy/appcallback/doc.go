// Package appcallback hands service-invocation calls to an app that speaks
// gRPC (--app-protocol grpc or grpcs) the way daprd does: through the app's
// dapr.proto.runtime.v1.AppCallback/OnInvoke.
//
// A call that reaches the callee sidecar as plain HTTP (the HTTP invoke
// API, or Dapr's gRPC InvokeService, which the caller sidecar turns into
// HTTP) cannot be served by a gRPC server as it is. The callee sidecar
// turns it into an InvokeRequest — method: the normalized path without its
// leading "/", data: the body, content_type, http_extension: the verb and
// the query — plus the headers as metadata, and the InvokeResponse back
// into the HTTP answer. gRPC calls (proxy mode) still pass through as
// frames.
//
// A gRPC error of the app becomes daprd's HTTP status for its code
// (HTTPStatus), with the JSON of the status as body and the code in
// HeaderGRPCStatus, so that a gRPC caller's sidecar gives its caller the
// app's own code back.
package appcallback
