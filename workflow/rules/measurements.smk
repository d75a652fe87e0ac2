# One rule per registered measurement (layerlab.core.registry.MEASUREMENTS), named after it: the networks it reads
# (init weights, trained weights) of one cell -> cells/<cell>/<measurement>.zarr, all through scripts/measure.py.


for _name in MEASUREMENTS:

    rule:
        name:
            _name
        input:
            unpack(functools.partial(measurement_inputs, _name)),
        output:
            store=zarr_store(f"{OUT}/cells/{{cell}}/{_name}.zarr"),
        params:
            cell=cell_json,
            **plugin_code(_name),
        threads: config["threads"]
        resources:
            gpu=1 if GPUS and MEASUREMENTS[_name].gpu else 0,
        log:
            f"{OUT}/logs/{_name}/{{cell}}.log",
        conda:
            "../../envs/layerlab.yaml"
        script:
            "../../scripts/measure.py"
