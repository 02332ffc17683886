"""Deploying Overcast to Google Cloud Functions (2nd gen): ``overcast deploy gcp``.

- ``source`` builds the source archive Cloud Functions builds from (your project, Overcast,
  ``requirements.txt``, ``main.py`` naming the entry points).
- ``deploy`` creates, updates and deletes the functions through the google-cloud-functions
  client (``GcpStack`` says what a stack is, ``Deployer`` does it).

Import ``overcast.infra.gcp.deploy`` only where it is used: it loads the Google client.
"""
