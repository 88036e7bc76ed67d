"""execbridge: the async Python client of the execbridge execution bridge.

Layout:
    client       ExecutionClient and ClientOptions: every call of the gateway.
    streams      OrderUpdateStream (resumable) and MarketDataStream (add/remove symbols,
                 resubscribes after a reconnect).
    admin        AdminClient (client.admin): kill switch, risk limits, cancel-all, flatten.
    sync         SyncExecutionClient: the blocking facade (the async client on a private loop).
    circuit      CircuitBreaker and its config.
    telemetry    correlation ids, OpenTelemetry spans, Prometheus metrics.
    models       OrderRequest, Order, Fill, Position, Balance, OrderUpdate, results, pages.
    market_data  market data events (TopOfBook, Trade, BookSnapshot, ...).
    enums        Python enums mirroring the proto enums.
    errors       ExecbridgeError and its subclasses; the translator from gRPC errors.
    retry        RetryPolicy, the one retry helper.
    _channels    the channel pool: targets, TLS files and their reload, keepalive.
    _convert     models <-> protobuf, the only module that touches generated messages.
    _proto       modules generated from proto/ at build time (private).
"""

__version__ = "0.1.0"

from ._channels import ChannelConfig, TlsConfig
from .admin import AdminClient
from .circuit import CircuitBreakerConfig, CircuitState
from .client import ClientOptions, ExecutionClient
from .enums import (
    Channel,
    FeedStatus,
    Liquidity,
    OrderEventType,
    OrderStatus,
    OrderType,
    RejectReason,
    Side,
    SlowConsumerPolicy,
    TimeInForce,
    TradingMode,
    TradingState,
)
from .errors import (
    Aborted,
    AlreadyExists,
    Cancelled,
    CircuitOpen,
    ClientOrderIdUsed,
    IdempotencyMismatch,
    Overloaded,
    RateLimited,
    ShuttingDown,
    SlowConsumer,
    UnknownOutcome,
    DataLoss,
    DeadlineExceeded,
    ExecbridgeError,
    FailedPrecondition,
    FieldViolation,
    Internal,
    InvalidArgument,
    NotFound,
    OutOfRange,
    PermissionDenied,
    ProtocolError,
    ResourceExhausted,
    Unauthenticated,
    Unavailable,
    Unimplemented,
    UnknownError,
    ValidationError,
    from_rpc_error,
)
from .market_data import (
    BookDelta,
    BookSnapshot,
    Gap,
    MarketDataEvent,
    PriceLevel,
    StatusFrame,
    TopOfBook,
    Trade,
)
from .models import (
    AccountRisk,
    AttachedOrder,
    FlattenResult,
    RiskLimits,
    Balance,
    Fill,
    MevProtection,
    Order,
    OrderRequest,
    OrderResult,
    OrderUpdate,
    Page,
    Portfolio,
    Position,
    SubmitResult,
    new_client_order_id,
)
from .retry import NO_RETRY, RetryPolicy
from .streams import MarketDataStream, OrderUpdateStream
from .sync import SyncExecutionClient
from .telemetry import PrometheusMetrics, correlation_id

__all__ = [
    "NO_RETRY",
    "Aborted",
    "AccountRisk",
    "AdminClient",
    "AlreadyExists",
    "AttachedOrder",
    "Balance",
    "BookDelta",
    "BookSnapshot",
    "Cancelled",
    "Channel",
    "ChannelConfig",
    "CircuitBreakerConfig",
    "CircuitOpen",
    "CircuitState",
    "ClientOptions",
    "DataLoss",
    "DeadlineExceeded",
    "ExecbridgeError",
    "ExecutionClient",
    "FailedPrecondition",
    "FeedStatus",
    "FieldViolation",
    "Fill",
    "FlattenResult",
    "Gap",
    "ClientOrderIdUsed",
    "IdempotencyMismatch",
    "Internal",
    "InvalidArgument",
    "Liquidity",
    "MarketDataEvent",
    "MarketDataStream",
    "MevProtection",
    "NotFound",
    "Order",
    "OrderEventType",
    "OrderRequest",
    "OrderResult",
    "OrderStatus",
    "OrderType",
    "OrderUpdate",
    "OrderUpdateStream",
    "OutOfRange",
    "Overloaded",
    "Page",
    "PermissionDenied",
    "Portfolio",
    "Position",
    "PriceLevel",
    "PrometheusMetrics",
    "ProtocolError",
    "RateLimited",
    "RejectReason",
    "ResourceExhausted",
    "RetryPolicy",
    "RiskLimits",
    "ShuttingDown",
    "Side",
    "SlowConsumer",
    "SlowConsumerPolicy",
    "StatusFrame",
    "SubmitResult",
    "SyncExecutionClient",
    "TimeInForce",
    "TlsConfig",
    "TopOfBook",
    "Trade",
    "TradingMode",
    "TradingState",
    "Unauthenticated",
    "Unavailable",
    "Unimplemented",
    "UnknownError",
    "UnknownOutcome",
    "ValidationError",
    "__version__",
    "correlation_id",
    "from_rpc_error",
    "new_client_order_id",
]
