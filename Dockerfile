# One image that is both the Dataflow Flex Template launcher and the SDK worker, for every
# pipeline (extract, enrich, embed, annotate, shard, subset, and any other in
# pipelines.options.OPTIONS_OF): the template parameter `pipeline` picks which
# (pipelines/flex_template.py). Built from the repository root:
#   docker build -t IMAGE .                                          # CPU torch
#   docker build --build-arg TORCH_VARIANT=cuda -t IMAGE-gpu .        # CUDA torch, for embed
# deploy/dataflow/build_and_run.sh builds and pushes both.

# The launcher binary comes from Google's Python 3.11 template launcher base, pinned by
# digest: the one public code pins (github.com/vicenteg/bnm-flex-test, Dockerfile). To move
# to a newer launcher, read the digest that a tag points at now and put it here:
#   gcloud artifacts docker images describe \
#     gcr.io/dataflow-templates-base/python311-template-launcher-base:latest \
#     --format='value(image_summary.digest)'
ARG LAUNCHER_BASE=gcr.io/dataflow-templates-base/python311-template-launcher-base@sha256:769c5c5f877830cff520974ec9f43d0921a12ad3a16db35d5c7c0db2002d5c14
# The worker: Beam's own SDK image, the release pyproject.toml pins (apache-beam==2.77.0,
# Python 3.11), so the boot binary and the SDK match. A tag: no public digest of it was
# found; pin one the same way (`docker buildx imagetools inspect apache/beam_python3.11_sdk:2.77.0`).
ARG BEAM_SDK=apache/beam_python3.11_sdk:2.77.0

FROM ${LAUNCHER_BASE} AS launcher

FROM ${BEAM_SDK}

# cpu: PyTorch's CPU wheels (PyPI's Linux torch is a CUDA one, several GB of libraries that
# a CPU worker never uses). cuda: PyTorch's CUDA 12 wheels (TORCH_CUDA), for embed workers
# with a GPU; Dataflow installs the driver (install-nvidia-driver in the accelerator hint).
ARG TORCH_VARIANT=cpu
ARG TORCH_CUDA=cu128

COPY --from=launcher /opt/google/dataflow/python_template_launcher \
     /opt/google/dataflow/python_template_launcher

WORKDIR /template
COPY deploy/dataflow/torch_index.sh ./deploy/dataflow/torch_index.sh
COPY pyproject.toml constraints.txt README.md ./
COPY pipelines ./pipelines
COPY transforms ./transforms
# constraints.txt holds torch and torchvision to the release the tests ran with; the
# variant's index serves that release's build. The package goes into site-packages, where
# the launcher and the workers import it from alike.
RUN index="$(bash deploy/dataflow/torch_index.sh "$TORCH_VARIANT" "$TORCH_CUDA")" \
    && pip install --no-cache-dir -c constraints.txt --extra-index-url "$index" .

# Fail the build, not a job: every pipeline imports (from site-packages: -P keeps
# /template off the path), and torch is the variant asked for.
RUN python -P -c "import importlib, torch; \
from pipelines.options import OPTIONS_OF; \
[importlib.import_module('pipelines.' + name) for name in OPTIONS_OF]; \
import pipelines.flex_template; \
cuda = torch.version.cuda is not None; \
assert cuda == ('$TORCH_VARIANT' == 'cuda'), (torch.__version__, '$TORCH_VARIANT')"

ENV FLEX_TEMPLATE_PYTHON_PY_FILE=/template/pipelines/flex_template.py

# Workers start through Beam's boot; on the launcher VM Dataflow runs
# /opt/google/dataflow/python_template_launcher instead, which runs the file above.
ENTRYPOINT ["/opt/apache/beam/boot"]
