"""hmls' local environment, for a checkout of the repository: real kube-apiservers and etcd
for a hub, spokes and an ingress cluster on this machine, the MLService simulator, the fault
and latency proxy, the audit reader and the podman image build.

It plays the role envtest plays for controller-runtime: the tests, the benchmarks, the soak
and ``make demo`` use it; the controller (the ``hmls`` package) never imports it, and the
``hmls`` wheel and image do not carry it.  ``make deps`` installs it (``pip install -e
./devenv``); ``hmls dev …`` and ``python -m hmls_devenv …`` run its command line.
"""
