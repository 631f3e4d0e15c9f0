#!/usr/bin/env bash
# Dataflow Flex Templates for every biomedica pipeline: the Artifact Registry repository,
# both images (CPU torch; CUDA torch for embed), one template spec per pipeline, and runs.
#
#   export PROJECT=my-proj REGION=us-central1 BUCKET=gs://my-bucket
#   deploy/dataflow/build_and_run.sh all          # repository, images, templates, the demo chain
#   deploy/dataflow/build_and_run.sh images       # the repository and both images only
#   deploy/dataflow/build_and_run.sh templates    # the template specs (images built already)
#   deploy/dataflow/build_and_run.sh demo         # the chain of runs below, each awaited
#   deploy/dataflow/build_and_run.sh launch PIPELINE key=value ...   # one run, not awaited
#
# Needs gcloud (logged in) and docker. TAG (default: the commit) names the images; REPO the
# Artifact Registry repository (default biomedica); GPU the embed workers' accelerator hint.
set -euo pipefail
: "${PROJECT:?set PROJECT}" "${REGION:?set REGION}" "${BUCKET:?set BUCKET (gs://...)}"
cd "$(dirname "$0")/../.."

REPO="${REPO:-biomedica}"
TAG="${TAG:-$(git rev-parse --short HEAD)}"
REGISTRY="${REGION}-docker.pkg.dev/${PROJECT}/${REPO}"
CPU_IMAGE="${REGISTRY}/biomedica:${TAG}"
GPU_IMAGE="${REGISTRY}/biomedica-gpu:${TAG}"
GPU="${GPU:-type:nvidia-l4;count:1;machine_type:g2-standard-4;install-nvidia-driver}"
TEMPLATES="${BUCKET}/templates/${TAG}"
RUN="${RUN:-${BUCKET}/runs/$(date +%Y%m%d)}"
# Pipelines whose workers embed images: their template (and workers) use the GPU image.
GPU_PIPELINES=" embed run "

repository() {
  if ! gcloud artifacts repositories describe "$REPO" \
    --project "$PROJECT" --location "$REGION" >/dev/null 2>&1; then
    gcloud artifacts repositories create "$REPO" --project "$PROJECT" --location "$REGION" \
      --repository-format=docker --description="biomedica Flex Template and worker images"
  fi
  gcloud auth configure-docker "${REGION}-docker.pkg.dev" --quiet
}

images() {
  repository
  docker build --build-arg TORCH_VARIANT=cpu -t "$CPU_IMAGE" .
  docker build --build-arg TORCH_VARIANT=cuda -t "$GPU_IMAGE" .
  docker push "$CPU_IMAGE"
  docker push "$GPU_IMAGE"
}

image_of() {
  if [[ "$GPU_PIPELINES" == *" $1 "* ]]; then echo "$GPU_IMAGE"; else echo "$CPU_IMAGE"; fi
}

# One spec per metadata file, that is per pipeline of pipelines.options.OPTIONS_OF
# (deploy/dataflow/make_metadata.py writes them).
templates() {
  local file name
  for file in deploy/dataflow/metadata/*.json; do
    name="$(basename "$file" .json)"
    gcloud dataflow flex-template build "${TEMPLATES}/${name}.json" \
      --project "$PROJECT" --image "$(image_of "$name")" --sdk-language PYTHON \
      --metadata-file "$file"
  done
}

# launch PIPELINE key=value ...: submit one job from the pipeline's template; prints its
# id. The keys are the pipeline's flags without "--" (a switch takes true or false, a
# repeatable flag a comma list). Parameters go with gcloud's "^~^" delimiter, so that
# values may hold commas and semicolons (an accelerator hint, a list of globs).
launch() {
  local pipeline="$1" parameters
  shift
  parameters="^~^pipeline=${pipeline}~sdk_container_image=$(image_of "$pipeline")"
  for pair in "$@"; do parameters+="~${pair}"; done
  gcloud dataflow flex-template run "biomedica-${pipeline}-$(date +%Y%m%d-%H%M%S)" \
    --project "$PROJECT" --region "$REGION" \
    --template-file-gcs-location "${TEMPLATES}/${pipeline}.json" \
    --temp-location "${BUCKET}/tmp" --staging-location "${BUCKET}/staging" \
    --parameters "$parameters" --format='value(job.id)'
}

# Wait for a job to end; fail unless it succeeded.
await() {
  local id="$1" state
  while true; do
    state="$(gcloud dataflow jobs describe "$id" --project "$PROJECT" --region "$REGION" \
      --format='value(currentState)')"
    case "$state" in
      JOB_STATE_DONE) return 0 ;;
      JOB_STATE_FAILED | JOB_STATE_CANCELLED | JOB_STATE_DRAINED)
        echo "job $id ended $state" >&2
        return 1
        ;;
    esac
    sleep 60
  done
}

# The whole chain on PMC Open Access, each stage reading the one before it.
demo() {
  await "$(launch extract source=s3://pmc-oa-opendata inventory=latest \
    output="${RUN}/extract" overwrite=true)"
  await "$(launch enrich input="${RUN}/extract" output="${RUN}/enriched" \
    medline="${BUCKET}/pubmed/baseline/*.xml.gz,${BUCKET}/pubmed/updatefiles/*.xml.gz")"
  await "$(launch embed input="${RUN}/enriched" output="${RUN}/embed" \
    model=open_clip:ViT-B-32 weights=hf-hub:laion/CLIP-ViT-B-32-laion2B-s34B-b79K \
    accelerator="$GPU")"
  await "$(launch annotate input="${RUN}/enriched" embeddings="${RUN}/embed" \
    output="${RUN}/annotate")"
  await "$(launch shard input="${RUN}/enriched" annotations="${RUN}/annotate" \
    output="${RUN}/dataset")"
  echo "dataset: ${RUN}/dataset (card: ${RUN}/dataset/README.md)"
}

case "${1:-all}" in
  all) images && templates && demo ;;
  images) images ;;
  templates) templates ;;
  demo) demo ;;
  launch) shift && launch "$@" ;;
  *) echo "usage: $0 [all|images|templates|demo|launch PIPELINE key=value ...]" >&2 && exit 2 ;;
esac
