#!/usr/bin/env bash
# Regenerates proto/pim/v1/pim.pb.go from pim.proto. Needs protoc (Debian's
# protobuf-compiler) and protoc-gen-go v1.36.12 (go install
# google.golang.org/protobuf/cmd/protoc-gen-go@v1.36.12).
set -euo pipefail
cd "$(dirname "$0")/.."
PATH="$PATH:$(go env GOPATH)/bin" protoc --go_out=. --go_opt=paths=source_relative proto/pim/v1/pim.proto
