"""`farmctl serve`: the kinesis_api_gw contract on the local target, plus a live dashboard.

Imported only by the `serve` command (Starlette, uvicorn and fastjsonschema come with the
`serve` extra), so `farmctl --help` does not pay for them.
"""
