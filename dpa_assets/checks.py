"""Asset checks the on-call engineer and the auditors read in the UI, recorded per partition.

``partitions_def`` on a check is a Dagster preview feature; it is what records a result for each
day (without it the UI shows one unpartitioned result and the check would load every partition).
"""

import warnings

import dagster as dg

from dpa_assets.assets import validated_freight, validation_metadata
from dpa_assets.partitions import daily_partitions
from dpa_assets.resources import ValidationPolicyResource
from dpa_assets.transforms import ValidationOutcome

# The preview warning is printed on every code-location load; we chose the feature deliberately.
warnings.filterwarnings("ignore", category=dg.PreviewWarning, message=".*partitions_def.*")


@dg.asset_check(
    asset=validated_freight,
    blocking=True,
    partitions_def=daily_partitions,
    description="Rejected/received share of the day is at most the configured maximum (default 30%).",
)
def rejection_rate(
    validated_freight: ValidationOutcome, validation_policy: ValidationPolicyResource
) -> dg.AssetCheckResult:
    """Blocks warehouse_facts for a day whose rejected share exceeds the policy's maximum."""
    blocked = validation_policy.blocks(validated_freight.rows_rejected, validated_freight.rows_received)
    metadata = validation_metadata(validated_freight)
    metadata["max_rejection_rate"] = dg.MetadataValue.float(validation_policy.max_rejection_rate)
    if validated_freight.rows_received == 0:
        metadata["note"] = dg.MetadataValue.text("empty day: nothing received, nothing rejected")
    return dg.AssetCheckResult(
        passed=not blocked, severity=dg.AssetCheckSeverity.ERROR, metadata=metadata
    )
