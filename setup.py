from setuptools import find_packages, setup

setup(
    name="dpa_assets",
    version="0.1.0",
    description="Nightly rail freight load into the data warehouse, as a Dagster code location",
    packages=find_packages(exclude=["dpa_assets_tests", "dpa_assets_tests.*"]),
    package_data={"dpa_assets": ["reference/*.csv", "warehouse/sql/*.sql", "instance/*.yaml"]},
    python_requires=">=3.11",
    install_requires=[
        "dagster==1.13.27",
        "dagster-webserver==1.13.27",
        "dagster-postgres==0.29.27",
        # Pinned to the versions the suite runs on: pandas 3 string dtypes and SQLAlchemy 2.1
        # driver defaults both changed behaviour the code relies on.
        "pandas==3.1.1",
        "pandera==0.35.0",
        # Parses landing files (C parser) and stores the intermediate days as Parquet.
        "pyarrow==26.0.1",
        "sqlalchemy==2.1.9",
        "psycopg2-binary==2.9.13",
        "requests==2.34.2",
        "tabulate==0.10.0",
    ],
    # playwright drives the OS's Chromium (apt-get install chromium) in the browser test; never its own download.
    extras_require={
        "dev": ["pytest==9.2.0", "hypothesis==6.170.17", "ruff==0.17.6", "playwright==1.64.1"],
        # The benchmark's optional dlt contender (dlt loads Arrow tables; pyarrow reads the landing file).
        "bench": ["dlt[postgres]==1.31.0", "pyarrow==26.0.1"],
    },
    entry_points={"console_scripts": ["dpa=dpa_assets.cli:main"]},
)
