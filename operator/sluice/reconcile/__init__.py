"""The imperative shell below the kopf handlers: read the world, decide, write.

One module per child kind (deployments, services, httproute, podmonitor) plus
status. Each applies with server-side apply (field manager ``sluice``) and
writes nothing when the live object already matches.
"""
