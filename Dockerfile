# One image that is both the Dataflow Flex Template launcher and the SDK worker.
FROM apache/beam_python3.11_sdk:2.77.0

COPY --from=gcr.io/dataflow-templates-base/python311-template-launcher-base:latest \
     /opt/google/dataflow/python_template_launcher /opt/google/dataflow/python_template_launcher

WORKDIR /template
COPY pyproject.toml constraints.txt README.md ./
COPY pipelines ./pipelines
COPY transforms ./transforms
# constraints.txt pins torch and torchvision; PyTorch's CPU index serves the CPU build of that
# release (PyPI's Linux torch is the CUDA one, several GB). The embed stage's GPU image is
# another build (issue 10).
RUN pip install --no-cache-dir -c constraints.txt \
      --extra-index-url https://download.pytorch.org/whl/cpu .

ENV FLEX_TEMPLATE_PYTHON_PY_FILE=/template/pipelines/extract.py
ENV PYTHONPATH=/template

# Workers start through Beam's boot; the launcher runs FLEX_TEMPLATE_PYTHON_PY_FILE.
ENTRYPOINT ["/opt/apache/beam/boot"]
