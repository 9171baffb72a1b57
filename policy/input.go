package policy

import (
	"net/url"
	"strings"

	"github.com/open-policy-agent/opa/v1/ast"

	"github.com/meshd/meshd/policy/authz"
)

var (
	kSource      = ast.StringTerm("source")
	kDestination = ast.StringTerm("destination")
	kRequest     = ast.StringTerm("request")
	kSpiffeID    = ast.StringTerm("spiffe_id")
	kTrustDomain = ast.StringTerm("trust_domain")
	kNamespace   = ast.StringTerm("namespace")
	kAppID       = ast.StringTerm("app_id")
	kProtocol    = ast.StringTerm("protocol")
	kMethod      = ast.StringTerm("method")
	kPath        = ast.StringTerm("path")
	kQuery       = ast.StringTerm("query")
	kHeaders     = ast.StringTerm("headers")
	emptyString  = ast.StringTerm("")
	protoHTTP    = ast.StringTerm(authz.ProtocolHTTP)
	protoGRPC    = ast.StringTerm(authz.ProtocolGRPC)
)

func str(s string) *ast.Term {
	if s == "" {
		return emptyString
	}
	return ast.StringTerm(s)
}

// sourceTerm is input.source for a caller; the zero identity (no mTLS)
// gives empty strings.
func sourceTerm(req *authz.Request) *ast.Term {
	c := req.Caller
	if c.TrustDomain.IsZero() {
		return ast.ObjectTerm(
			[2]*ast.Term{kSpiffeID, emptyString}, [2]*ast.Term{kTrustDomain, emptyString},
			[2]*ast.Term{kNamespace, emptyString}, [2]*ast.Term{kAppID, emptyString})
	}
	return ast.ObjectTerm(
		[2]*ast.Term{kSpiffeID, ast.StringTerm(c.String())},
		[2]*ast.Term{kTrustDomain, ast.StringTerm(c.TrustDomain.Name())},
		[2]*ast.Term{kNamespace, str(c.Namespace)},
		[2]*ast.Term{kAppID, str(c.AppID)})
}

// buildInput builds the input document as an ast value (no JSON round
// trip). src is the cached input.source term of the caller.
func buildInput(req *authz.Request, src *ast.Term, headers, query bool) ast.Value {
	proto := protoHTTP
	if req.Protocol == authz.ProtocolGRPC {
		proto = protoGRPC
	} else if req.Protocol != authz.ProtocolHTTP {
		proto = str(req.Protocol)
	}
	n := 3
	if headers {
		n++
	}
	if query {
		n++
	}
	kv := make([][2]*ast.Term, 3, n)
	kv[0] = [2]*ast.Term{kProtocol, proto}
	kv[1] = [2]*ast.Term{kMethod, str(req.Method)}
	kv[2] = [2]*ast.Term{kPath, str(req.Path)}
	if query {
		kv = append(kv, [2]*ast.Term{kQuery, queryTerm(req.Query)})
	}
	if headers {
		kv = append(kv, [2]*ast.Term{kHeaders, headersTerm(req)})
	}
	return ast.NewObject(
		[2]*ast.Term{kSource, src},
		[2]*ast.Term{kDestination, ast.ObjectTerm(
			[2]*ast.Term{kAppID, str(req.Destination.AppID)},
			[2]*ast.Term{kNamespace, str(req.Destination.Namespace)})},
		[2]*ast.Term{kRequest, ast.ObjectTerm(kv...)},
	)
}

func queryTerm(raw string) *ast.Term {
	vals, _ := url.ParseQuery(raw) // a malformed pair is skipped, as net/http does
	kv := make([][2]*ast.Term, 0, len(vals))
	for k, vs := range vals {
		arr := make([]*ast.Term, len(vs))
		for i, v := range vs {
			arr[i] = ast.StringTerm(v)
		}
		kv = append(kv, [2]*ast.Term{ast.StringTerm(k), ast.ArrayTerm(arr...)})
	}
	return ast.ObjectTerm(kv...)
}

// headersTerm maps lower-case header names to their values joined by ", ".
func headersTerm(req *authz.Request) *ast.Term {
	kv := make([][2]*ast.Term, 0, len(req.Header))
	for k, vs := range req.Header {
		kv = append(kv, [2]*ast.Term{ast.StringTerm(strings.ToLower(k)), ast.StringTerm(strings.Join(vs, ", "))})
	}
	return ast.ObjectTerm(kv...)
}
