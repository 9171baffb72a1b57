package mesh.authz

# frontend may only read orders now; billing may read them too.
allow if {
	input.destination.app_id == "orders"
	input.source.namespace == "default"
	input.source.app_id in {"frontend", "billing"}
	input.request.method == "GET"
	startswith(input.request.path, "/orders")
}

deny contains "DELETE is forbidden" if input.request.method == "DELETE"
