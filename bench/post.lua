-- wrk script for bench_core: POST the JSON body held in the WRK_BODY environment variable.
wrk.method = "POST"
wrk.body = os.getenv("WRK_BODY")
wrk.headers["Content-Type"] = "application/json"
