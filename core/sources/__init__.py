"""Statement sources: one module per format, one registry (this literal list)."""

from core.sources.alipay import AlipayTradeBill
from core.sources.camt import CamtStatement
from core.sources.base import ControlTotalError, InputFile, ParseError, Parsed, Source  # noqa: F401
from core.sources.generic import GenericStatement
from core.sources.mt940 import Mt940Statement
from core.sources.ofx import OfxStatement
from core.sources.orders import OrdersExport
from core.sources.wechatpay import WeChatPayTradeBill

# kind (as written in config) -> source class
REGISTRY: dict[str, type] = {
    "orders": OrdersExport,
    "wechatpay": WeChatPayTradeBill,
    "alipay": AlipayTradeBill,
    "mt940": Mt940Statement,
    "camt": CamtStatement,
    "ofx": OfxStatement,
    "generic": GenericStatement,
}
