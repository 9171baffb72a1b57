package mesh.authz

# frontend may read and create orders.
allow if {
	input.destination.app_id == "orders"
	input.source.namespace == "default"
	input.source.app_id == "frontend"
	input.request.method in {"GET", "POST"}
	startswith(input.request.path, "/orders")
}

deny contains "DELETE is forbidden" if input.request.method == "DELETE"
