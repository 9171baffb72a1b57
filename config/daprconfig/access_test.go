package daprconfig_test

import (
	"testing"

	"github.com/meshd/meshd/config/daprconfig"
	"github.com/meshd/meshd/policy/accesscontrol"
)

// The file of TestParseFull still parses for the accessControl parser,
// which reads the same Configuration documents (daprconfig.Specs).
func TestParseFullAccessControl(t *testing.T) {
	acls, err := accesscontrol.Parse("c.yaml", []byte(daprconfig.FullConfiguration))
	if err != nil || len(acls) != 1 {
		t.Fatalf("accesscontrol.Parse = %v, %v", acls, err)
	}
}
