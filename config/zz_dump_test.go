package config

import (
	"fmt"
	"os"
	"strings"
	"testing"
)

func TestDump(t *testing.T) {
	files := os.Getenv("DUMP")
	if files == "" {
		t.Skip()
	}
	env := map[string]string{"AUDIENCE": "aud-x", "CRM_API_KEY": "sk-live-123", "INSECURE": "false", "COUNT": "3", "WS": "true", "APPROVALS": "2", "INJECT": "planted-env-secret\r\nX: y"}
	for _, f := range strings.Fields(files) {
		cfg, err := Load(f, func(k string) string { return env[k] })
		fmt.Printf("== %s\n", f)
		if err != nil {
			fmt.Println(err)
			continue
		}
		fmt.Printf("%+v\n", *cfg)
	}
}
