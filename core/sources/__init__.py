"""Statement sources: one module per format, one registry (this literal list)."""

from core.sources.adyen import AdyenSettlementDetail
from core.sources.alipay import AlipayTradeBill
from core.sources.base import ControlTotalError, InputFile, ParseError, Parsed, Source  # noqa: F401
from core.sources.orders import OrdersExport
from core.sources.paypal import PayPalSettlementReport, PayPalTransactionDetailReport
from core.sources.paypal_csv import PayPalActivityCSV
from core.sources.stripe import StripeBalanceReport
from core.sources.wechatpay import WeChatPayTradeBill

# kind (as written in config) -> source class
REGISTRY: dict[str, type] = {
    "orders": OrdersExport,
    "wechatpay": WeChatPayTradeBill,
    "alipay": AlipayTradeBill,
    "stripe": StripeBalanceReport,
    "paypal_stl": PayPalSettlementReport,
    "paypal_trr": PayPalTransactionDetailReport,
    "paypal_activity": PayPalActivityCSV,
    "adyen": AdyenSettlementDetail,
}
