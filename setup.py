from setuptools import find_packages, setup

setup(
    name="dpa_assets",
    version="0.1.0",
    description="Nightly rail freight load into the data warehouse, as a Dagster code location",
    packages=find_packages(exclude=["dpa_assets_tests", "dpa_assets_tests.*"]),
    package_data={"dpa_assets": ["reference/*.csv", "warehouse/sql/*.sql", "instance/dagster.yaml"]},
    python_requires=">=3.11",
    install_requires=[
        "dagster==1.13.27",
        "dagster-webserver==1.13.27",
        "dagster-postgres==0.29.27",
        "pandas>=2.2",
        "pandera==0.35.0",
        "sqlalchemy>=2.0",
        "psycopg2-binary>=2.9",
        "requests>=2.32",
        "tabulate>=0.9",
    ],
    extras_require={"dev": ["pytest>=8", "hypothesis>=6.100", "ruff==0.17.6"]},
    entry_points={"console_scripts": ["dpa=dpa_assets.cli:main"]},
)
