"""The rules, pure: no sockets, no SQL, no clocks read directly."""
