#!/usr/bin/env bash
# Build the Flex Template image and spec, then launch one extract run on Dataflow.
#   PROJECT=my-proj REGION=us-central1 BUCKET=gs://my-bucket deploy/dataflow/build_and_run.sh
set -euo pipefail
: "${PROJECT:?}" "${REGION:?}" "${BUCKET:?}"
IMAGE="${REGION}-docker.pkg.dev/${PROJECT}/biomedica/biomedica:$(git rev-parse --short HEAD)"
cd "$(dirname "$0")/../.."
gcloud builds submit --tag "$IMAGE" .
gcloud dataflow flex-template build "${BUCKET}/templates/extract.json" \
  --image "$IMAGE" --sdk-language PYTHON --metadata-file deploy/dataflow/extract_metadata.json
gcloud dataflow flex-template run "biomedica-extract-$(date +%Y%m%d-%H%M%S)" \
  --region "$REGION" --template-file-gcs-location "${BUCKET}/templates/extract.json" \
  --parameters source=s3://pmc-oa-opendata,output="${BUCKET}/runs/$(date +%Y%m%d)",inventory=latest \
  --parameters sdk_container_image="$IMAGE"
