package mesh.authz

allow if {
	input.request.method == "GET"
