def test_case(benchmark, case, impl, prepared):
    benchmark.group = case.name
    benchmark.extra_info.update({"family": case.family, "device": case.device, "unit": case.unit,
                                 "work": case.work})
    if case.device == "cuda":
        import cupy

        def call():
            prepared()
            cupy.cuda.get_current_stream().synchronize()

        benchmark(call)
    else:
        benchmark(prepared)
