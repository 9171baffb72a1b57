package mesh.authz

# Admin routes are closed everywhere, whatever the case.
deny contains "admin routes are closed mesh-wide" if {
	startswith(lower(input.request.path), "/admin")
}

# Only workloads of this mesh's trust domain.
deny contains "caller from a foreign trust domain" if {
	input.source.trust_domain != "cluster.local"
}
