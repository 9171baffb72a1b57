// Package daprapi serves Dapr's gRPC service-invocation API,
// dapr.proto.runtime.v1.Dapr/InvokeService, on meshd's app-facing gRPC port,
// and Dapr's metadata API on both app-facing ports (GetMetadata and
// SetMetadata over gRPC, MetadataHandler for GET /v1.0/metadata and PUT
// /v1.0/metadata/{key} over HTTP), from a MetadataFunc the sidecar provides.
//
// Apps built on a Dapr SDK call InvokeService on the sidecar's gRPC port
// (50001) instead of the HTTP invoke API. The handler returned by New decodes
// the call and turns it into the equivalent HTTP request
//
//	{verb} /v1.0/invoke/{id}/method/{method}?{querystring}
//
// which it hands to the proxy's outbound HTTP handler, so that target parsing,
// method normalization, resolution, balancing, policy and mTLS happen in one
// place. The HTTP answer goes back as common.v1.InvokeResponse{data, content_type};
// errors become gRPC statuses the way daprd maps them (see ErrorStatus).
//
// The app-facing gRPC port passes every other gRPC call through as raw
// HTTP/2 frames; mount this handler for InvokePath, MetadataPath and
// SetMetadataPath:
//
//	invoke := daprapi.New(outboundHTTP)
//	if r.URL.Path == daprapi.InvokePath { invoke.ServeHTTP(w, r); return }
//
// The handler needs an HTTP/2 request (h2c or TLS), as gRPC always is.
package daprapi
