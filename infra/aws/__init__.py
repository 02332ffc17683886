"""Overcast on AWS: the CloudFormation template, the Lambda package, and deploying them.

- ``template``: the stack's template as a dict (``build_template``).
- ``package``: the functions' code package (``build_package``): the project, Overcast and its
  runtime dependencies as manylinux wheels for Lambda's runtime, zipped reproducibly.
- ``deploy``: upload the package, create or update the stack and wait for it; destroy it.
- ``register``: register a project's deployments and automations with the deployed API.

``overcast deploy aws`` and ``overcast destroy aws`` (``overcast.infra.cli.cloud``) drive them.
"""
