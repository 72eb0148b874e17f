"""The operator page of `station serve`: a live page for the line, and the JSON API under it.

Owns the web application (`app`: Starlette routes, the server-sent event stream), the state a
page shows and the commands it may give (`hub`: folds the line's events into the state, runs
one unit at a time on a thread of its own, answers prompts, serves a prompt's picture from the
procedure's directory only), the access rules (`security`: loopback by default, a token for
any other address, CSRF-safe commands, DNS-rebinding checks), and the static page under
`static/` (hand-written HTML, one script, one style sheet; no build step, nothing fetched from
elsewhere). May import `station.records`, `station.config`, `station.line` and
`station.tofupilot` (read-only state); only `station.cli` imports it.
"""
