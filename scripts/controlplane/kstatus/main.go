// Command kstatus reads one Kubernetes object as JSON on stdin and prints what kstatus
// (sigs.k8s.io/cli-utils/pkg/kstatus/status) computes for it, as JSON:
// {"status": "Current|InProgress|Failed|Terminating|Unknown", "message": "..."}.
// An object kstatus cannot compute (status.Compute returns an error) is Unknown with the
// error as its message, as kstatus' own status poller reports it. A real kstatus client
// for hmls' tests; not part of the controller.
package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"
)

type verdict struct {
	Status  status.Status `json:"status"`
	Message string        `json:"message"`
}

func main() {
	raw, err := io.ReadAll(os.Stdin)
	if err != nil {
		fail(err)
	}
	obj := &unstructured.Unstructured{}
	if err := obj.UnmarshalJSON(raw); err != nil {
		fail(err)
	}
	out := verdict{Status: status.UnknownStatus}
	res, err := status.Compute(obj)
	if err != nil {
		out.Message = err.Error()
	} else {
		out = verdict{Status: res.Status, Message: res.Message}
	}
	if err := json.NewEncoder(os.Stdout).Encode(out); err != nil {
		fail(err)
	}
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "kstatus:", err)
	os.Exit(2)
}
